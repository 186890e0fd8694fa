package cpio

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

type entry struct {
	name         string
	mode         uint32
	rmajor, rmin uint32
	data         string
}

// parse reads a newc archive back (what the kernel's unpacker does).
func parse(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	for off := 0; ; {
		if len(b)-off < headerSize || string(b[off:off+6]) != magic {
			t.Fatalf("bad header at %d", off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(v)
		}
		mode, size, rmaj, rmin, namesize := field(1), field(6), field(9), field(10), field(11)
		name := string(b[off+headerSize : off+headerSize+int(namesize)-1])
		off += headerSize + int(namesize)
		off += pad4(off)
		data := string(b[off : off+int(size)])
		off += int(size)
		off += pad4(off)
		if name == trailer {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, entry{name, mode, rmaj, rmin, data})
	}
}

func TestWriter(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Dir("dev", 0o755)
	w.CharDev("/dev/console", 0o600, 5, 1)
	w.File("init", 0o755, []byte("#!\x00binary"))
	w.File("lib/odd", 0o644, []byte("abc")) // sizes that need padding
	w.Symlink("bin", "lib")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive of %d bytes is not 4-byte aligned", buf.Len())
	}
	got := parse(t, buf.Bytes())
	want := []entry{
		{"dev", typeDir | 0o755, 0, 0, ""},
		{"dev/console", typeChar | 0o600, 5, 1, ""},
		{"init", typeRegular | 0o755, 0, 0, "#!\x00binary"},
		{"lib/odd", typeRegular | 0o644, 0, 0, "abc"},
		{"bin", typeSymlink | 0o777, 0, 0, "lib"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	// GNU cpio, when installed, agrees.
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-t", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.Output()
		if err != nil || strings.Fields(string(out))[1] != "dev/console" {
			t.Errorf("cpio -t: %q, %v", out, err)
		}
	}
}

func TestWriterErrors(t *testing.T) {
	w := NewWriter(&bytes.Buffer{})
	if err := w.File("", 0o644, nil); err == nil {
		t.Error("empty name accepted")
	}
	if err := w.Dir("ok", 0o755); err == nil {
		t.Error("an error did not stick")
	}
	w = NewWriter(&bytes.Buffer{})
	w.Close()
	if err := w.Dir("late", 0o755); err == nil {
		t.Error("write after Close accepted")
	}
}
