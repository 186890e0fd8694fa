package manifest

import (
	"errors"
	"strings"
	"testing"

	"github.com/kindling-dev/kindling/errdefs"
)

func TestParse(t *testing.T) {
	m, err := Parse([]byte("functions:\n  - name: a\n    wasm: a.wasm\n    memory: 64\n    timeout: 2s\n    env: {K: V}\n"))
	if err != nil {
		t.Fatal(err)
	}
	spec := m.Functions[0].Spec("sha256:x")
	if spec.MemoryMB != 64 || spec.TimeoutMs != 2000 || spec.Env["K"] != "V" {
		t.Fatalf("spec = %+v", spec)
	}
}

func TestParse_Errors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"empty", "functions: []", "no functions"},
		{"no name", "functions:\n  - wasm: a.wasm", "name is required"},
		{"no wasm", "functions:\n  - name: a", "wasm"},
		{"twice", "functions:\n  - {name: a, wasm: a}\n  - {name: a, wasm: b}", "listed twice"},
		{"bad timeout", "functions:\n  - {name: a, wasm: a, timeout: soon}", "timeout"},
		{"unknown field", "functions:\n  - {name: a, wasm: a, memroy: 5}", "memroy"},
		{"not yaml", "functions: [", "yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want invalid argument mentioning %q", err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("functions:\n  - name: a\n    wasm: a.wasm\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err == nil && len(m.Functions) == 0 {
			t.Fatal("accepted a manifest with no functions")
		}
	})
}
