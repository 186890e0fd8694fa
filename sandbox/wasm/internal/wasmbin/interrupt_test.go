package wasmbin

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// module wraps one function body (without locals) in a minimal module:
// one type () -> (), one function, one memory, no imports, so the
// interrupt flag is global 0.
func module(body []byte) []byte { return moduleWithMemory(body, true) }

func moduleWithMemory(body []byte, memory bool) []byte {
	code := append([]byte{0}, body...) // no locals
	var b bytes.Buffer
	b.WriteString("\x00asm\x01\x00\x00\x00")
	writeSection(&b, section{id: 1, body: []byte{1, 0x60, 0, 0}})
	writeSection(&b, section{id: 3, body: []byte{1, 0}})
	if memory {
		writeSection(&b, section{id: 5, body: []byte{1, 0, 1}})
	}
	writeSection(&b, section{id: secCode, body: append(append([]byte{1}, uleb(uint64(len(code)))...), code...)})
	return b.Bytes()
}

// codeOf returns the single function body of an instrumented module().
func codeOf(t *testing.T, bin []byte) []byte {
	t.Helper()
	m, err := Parse(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range m.sections {
		if s.id == secCode {
			r := &reader{b: s.body}
			r.u32()
			code := r.bytes(int(r.u32()))
			return code[1:] // skip the locals count
		}
	}
	t.Fatal("no code section")
	return nil
}

func TestWithInterrupt_Bodies(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	// The flag is global 0 and the countdown global 1 (YieldEvery = 1<<14
	// is 0x80 0x80 0x01 in signed LEB128).
	check := []byte{
		0x23, 1, 0x45, 0x04, 0x40, // global.get 1; i32.eqz; if
		0x41, 0x80, 0x80, 0x01, 0x24, 1, // i32.const 16384; global.set 1
		0x41, 0, 0x40, 0, 0x1A, // i32.const 0; memory.grow 0; drop
		0x23, 0, 0x04, 0x40, 0x00, 0x0B, // global.get 0; if; unreachable; end
		0x0B,                            // end
		0x23, 1, 0x41, 1, 0x6B, 0x24, 1, // global.get 1; i32.const 1; i32.sub; global.set 1
	}
	withCheck := func(parts ...[]byte) []byte { return bytes.Join(parts, check) }
	threes := bytes.Repeat([]byte{3}, 16)
	for _, tc := range []struct {
		name      string
		body, out []byte
	}{
		// 0x03 (loop) inside immediates must not be taken for a loop.
		{"i32.const", []byte{0x41, 3, 0x1A, 0x0B}, nil},
		{"i64.const", []byte{0x42, 3, 0x1A, 0x0B}, nil},
		{"f64.const", []byte{0x44, 3, 3, 3, 3, 3, 3, 3, 3, 0x1A, 0x0B}, nil},
		{"memarg", []byte{0x41, 0, 0x28, 2, 3, 0x1A, 0x0B}, nil},
		{"v128.const", append(append([]byte{0xFD, 12}, threes...), 0x1A, 0x0B), nil},
		{"br_table", []byte{0x02, 0x40, 0x41, 0, 0x0E, 2, 0, 0, 0, 0x0B, 0x0B}, nil},
		{"memory.fill", []byte{0x41, 0, 0x41, 3, 0x41, 3, 0xFC, 11, 0, 0x0B}, nil},
		{"loop", []byte{0x03, 0x40, 0x0B, 0x0B}, withCheck([]byte{0x03, 0x40}, []byte{0x0B, 0x0B})},
		{"loop with result", []byte{0x03, 0x7F, 0x41, 3, 0x0B, 0x1A, 0x0B},
			withCheck([]byte{0x03, 0x7F}, []byte{0x41, 3, 0x0B, 0x1A, 0x0B})},
		{"nested loops", []byte{0x03, 0x40, 0x03, 0x40, 0x0B, 0x0B, 0x0B},
			withCheck([]byte{0x03, 0x40}, []byte{0x03, 0x40}, []byte{0x0B, 0x0B, 0x0B})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse(module(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			out, err := m.WithInterrupt()
			if err != nil {
				t.Fatal(err)
			}
			want := tc.out
			if want == nil {
				want = tc.body
			}
			if got := codeOf(t, out); !bytes.Equal(got, want) {
				t.Fatalf("body\n got % x\nwant % x", got, want)
			}
			if _, err := rt.CompileModule(ctx, out); err != nil {
				t.Fatalf("instrumented module does not compile: %v", err)
			}
		})
	}
}

func TestWithInterrupt_Unsupported(t *testing.T) {
	for name, body := range map[string][]byte{
		"try":             {0x06, 0x40, 0x0B, 0x0B},
		"return_call":     {0x12, 0, 0x0B},
		"call_ref":        {0x14, 0, 0x0B},
		"unknown 0xfc":    {0xFC, 18, 0x0B},
		"unknown 0xfd":    {0xFD, 0x80, 0x04, 0x0B},
		"unknown 0xfe":    {0xFE, 0x04, 0x0B},
		"truncated const": {0x41},
	} {
		m, err := Parse(module(body))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.WithInterrupt(); err == nil {
			t.Errorf("%s: instrumented", name)
		} else if name != "truncated const" && !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: %v, want ErrUnsupported", name, err)
		}
	}
	// Without a memory there is no memory.grow to yield with.
	m, err := Parse(moduleWithMemory([]byte{0x03, 0x40, 0x0B, 0x0B}, false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.WithInterrupt(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("module without memory: %v, want ErrUnsupported", err)
	}
}

// Every test module instruments into a module that compiles and exports
// the flag; the spinning one traps once the flag is raised.
func TestWithInterrupt_TestModules(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	files, _ := filepath.Glob("../../../../internal/testmodules/*.wasm")
	if len(files) == 0 {
		t.Fatal("no test modules")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".wasm")
		if name == "garbage" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			bin, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Parse(bin)
			if err != nil {
				t.Fatal(err)
			}
			out, err := m.WithInterrupt()
			if name == "uninstrumentable" {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("err = %v, want ErrUnsupported", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cm, err := rt.CompileModule(ctx, out)
			if err != nil {
				t.Fatalf("instrumented module does not compile: %v", err)
			}
			defer cm.Close(ctx)
			if _, ok := cm.ExportedFunctions()["kindling:interrupt"]; ok {
				t.Fatal("flag exported as a function")
			}
			if name != "loop" {
				return
			}
			mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithStartFunctions())
			if err != nil {
				t.Fatal(err)
			}
			defer mod.Close(ctx)
			flag, ok := mod.ExportedGlobal(InterruptExport).(api.MutableGlobal)
			if !ok {
				t.Fatal("no mutable interrupt global exported")
			}
			flag.Set(1)
			if _, err := mod.ExportedFunction("_start").Call(ctx); err == nil || !strings.Contains(err.Error(), "unreachable") {
				t.Fatalf("spinning module with the flag raised: %v, want an unreachable trap", err)
			}
		})
	}
}

func FuzzWithInterrupt(f *testing.F) {
	for _, body := range [][]byte{{0x03, 0x40, 0x0B, 0x0B}, {0x41, 3, 0x1A, 0x0B}} {
		f.Add(module(body))
	}
	if bin, err := os.ReadFile("../../../../internal/testmodules/echo.wasm"); err == nil {
		f.Add(bin)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		out, err := m.WithInterrupt() // must not panic
		if err != nil {
			return
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("instrumented module does not parse: %v", err)
		}
	})
}

// build assembles a module of functions of type () -> () from their code
// (locals included), with one memory, exporting the first as "f".
func build(codes ...[]byte) []byte {
	var b bytes.Buffer
	b.WriteString("\x00asm\x01\x00\x00\x00")
	writeSection(&b, section{id: 1, body: []byte{1, 0x60, 0, 0}})
	writeSection(&b, section{id: 3, body: append([]byte{byte(len(codes))}, make([]byte, len(codes))...)})
	writeSection(&b, section{id: 5, body: []byte{1, 0, 1}})
	writeSection(&b, section{id: 7, body: []byte{1, 1, 'f', 0, 0}})
	code := []byte{byte(len(codes))}
	for _, c := range codes {
		code = append(append(code, uleb(uint64(len(c)))...), c...)
	}
	writeSection(&b, section{id: secCode, body: code})
	return b.Bytes()
}

// The count is the instance's, not a loop's: f loops 1,000 times (fewer
// than YieldEvery) calling g, which loops 100 times. Neither loop alone
// reaches YieldEvery, together they do, so with the flag raised f traps.
func TestWithInterrupt_CountsAcrossCalls(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	// (local i32) loop [call 1] local.get 0; i32.const 1; i32.add;
	// local.tee 0; i32.const LIMIT; i32.lt_u; br_if 0 end end
	loop := func(limit int32, call bool) []byte {
		b := []byte{1, 1, 0x7F, 0x03, 0x40}
		if call {
			b = append(b, 0x10, 1)
		}
		b = append(b, 0x20, 0, 0x41, 1, 0x6A, 0x22, 0, 0x41)
		return append(append(b, sleb32(limit)...), 0x49, 0x0D, 0, 0x0B, 0x0B)
	}
	m, err := Parse(build(loop(1000, true), loop(100, false)))
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.WithInterrupt()
	if err != nil {
		t.Fatal(err)
	}
	mod, err := rt.Instantiate(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	f := mod.ExportedFunction("f")
	if _, err := f.Call(ctx); err != nil {
		t.Fatalf("without the flag: %v", err)
	}
	mod.ExportedGlobal(InterruptExport).(api.MutableGlobal).Set(1)
	if _, err := f.Call(ctx); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("with the flag raised: %v, want an unreachable trap at a yield", err)
	}
}
