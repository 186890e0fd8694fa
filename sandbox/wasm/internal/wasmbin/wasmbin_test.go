package wasmbin

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

func TestParseAndRewrite(t *testing.T) {
	bin, err := os.ReadFile("../../../../internal/testmodules/snapreactor.wasm")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Exports["_initialize"] || !m.Exports["kindling_handle"] || m.HasStart {
		t.Fatalf("exports %v start %v", m.Exports, m.HasStart)
	}
	if len(m.Globals) != 1 || m.Globals[0].Index != 0 || m.Globals[0].Type != 0x7F {
		t.Fatalf("globals %+v", m.Globals)
	}
	if len(m.Data) != 1 || !m.Data[0].Active || !m.Data[0].ConstOffset || m.Data[0].Offset != 16 || string(m.Data[0].Bytes) != "init:" {
		t.Fatalf("data %+v", m.Data)
	}
	for name, rewrite := range map[string]func() ([]byte, error){"dropped": m.ForSnapshot, "passive": m.ForSnapshotPassive} {
		out, err := rewrite()
		if err != nil {
			t.Fatal(err)
		}
		r, err := Parse(out)
		if err != nil {
			t.Fatalf("%s: rewritten module does not parse: %v", name, err)
		}
		if !r.Exports["kindling_handle"] {
			t.Errorf("%s: lost exports", name)
		}
		for _, d := range r.Data {
			if d.Active {
				t.Errorf("%s: active data segment left", name)
			}
		}
		if name == "dropped" && len(r.Data) != 0 {
			t.Errorf("dropped: %d data segments left", len(r.Data))
		}
		if name == "passive" && (len(r.Data) != 1 || !bytes.Equal(r.Data[0].Bytes, []byte("init:"))) {
			t.Errorf("passive: data %+v", r.Data)
		}
		if !bytes.Contains(out, []byte(ExportPrefix+"0")) {
			t.Errorf("%s: global not exported", name)
		}
	}
}

func TestParse_Errors(t *testing.T) {
	for _, bad := range [][]byte{nil, []byte("\x00asm"), []byte("\x00asm\x02\x00\x00\x00"), []byte("\x00asm\x01\x00\x00\x00\x01\xff")} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestForSnapshot_Unsupported(t *testing.T) {
	m := &Module{HasStart: true}
	if _, err := m.ForSnapshot(); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("start function: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	if bin, err := os.ReadFile("../../../../internal/testmodules/snapreactor.wasm"); err == nil {
		f.Add(bin)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		_, _ = m.ForSnapshot() // must not panic
	})
}
