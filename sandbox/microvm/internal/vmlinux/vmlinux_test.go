package vmlinux

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCachedHostKernel(t *testing.T) {
	matches, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(matches) == 0 {
		t.Skip("no /boot/vmlinuz-* on this host")
	}
	dir := t.TempDir()
	start := time.Now()
	p, err := Cached(context.Background(), matches[0], dir)
	if err != nil {
		t.Fatal(err)
	}
	bz, _ := os.ReadFile(matches[0])
	if v := Version(bz); filepath.Base(matches[0]) != "vmlinuz-"+v {
		t.Errorf("Version = %q, file %s", v, matches[0])
	}
	st, _ := os.Stat(p)
	t.Logf("%s -> %s (%d bytes) in %v", matches[0], p, st.Size(), time.Since(start))
}

// tinyKernel is a minimal x86-64 ELF whose only segment is a PVH note.
func tinyKernel() []byte {
	le := binary.LittleEndian
	note := make([]byte, 0, 24)
	note = le.AppendUint32(note, 4)  // namesz ("Xen\0")
	note = le.AppendUint32(note, 4)  // descsz
	note = le.AppendUint32(note, 18) // XEN_ELFNOTE_PHYS32_ENTRY
	note = append(note, "Xen\x00"...)
	note = le.AppendUint32(note, 0x1000000)
	const ehsize, phsize = 64, 56
	b := make([]byte, ehsize+phsize)
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)  // version
	le.PutUint64(b[32:], 64) // phoff
	le.PutUint16(b[52:], 64) // ehsize
	le.PutUint16(b[54:], 56) // phentsize
	le.PutUint16(b[56:], 1)  // phnum
	ph := b[ehsize:]
	le.PutUint32(ph[0:], 4) // PT_NOTE
	le.PutUint64(ph[8:], ehsize+phsize)
	le.PutUint64(ph[32:], uint64(len(note)))
	le.PutUint64(ph[40:], uint64(len(note)))
	return append(b, note...)
}

// bzImage wraps payload in a boot header, as the kernel build does.
func bzImage(payload []byte, header bool) []byte {
	b := make([]byte, 2*512)
	b[0x1f1] = 1 // setup_sects
	if header {
		copy(b[0x202:], "HdrS")
		binary.LittleEndian.PutUint16(b[0x206:], 0x20f)
		binary.LittleEndian.PutUint32(b[0x248:], 16)
		binary.LittleEndian.PutUint32(b[0x24c:], uint32(len(payload)))
		copy(b[0x200+0x10:], "6.9.0-test (builder) #1")
		binary.LittleEndian.PutUint16(b[0x20e:], 0x10)
	}
	b = append(b, make([]byte, 16)...)
	return append(b, payload...)
}

func TestExtract(t *testing.T) {
	elfKernel := tinyKernel()
	if err := Check(elfKernel); err != nil {
		t.Fatalf("tiny kernel: %v", err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(elfKernel)
	zw.Close()
	for _, header := range []bool{true, false} {
		bz := bzImage(gz.Bytes(), header)
		got, err := Extract(context.Background(), bz)
		if err != nil || !bytes.Equal(got, elfKernel) {
			t.Errorf("header=%v: Extract = %d bytes, %v", header, len(got), err)
		}
		if v := Version(bz); header && v != "6.9.0-test" {
			t.Errorf("Version = %q", v)
		}
	}
	if _, err := Extract(context.Background(), bzImage([]byte("no payload here"), true)); err == nil {
		t.Error("extracted a kernel from nothing")
	}
	if err := Check([]byte("\x7fELF")); err == nil {
		t.Error("Check accepted a truncated ELF")
	}
}
