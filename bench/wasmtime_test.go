//go:build wasmtime && cgo

package bench

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/workloads"
)

// TestWasmtimePeer runs a workload of the suite under the Wasmtime peer,
// next to kindling's warm column.
func TestWasmtimePeer(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a Go-built module with Cranelift; skipped with -short")
	}
	ctx := t.Context()
	ws, err := BuildSuite(ctx, t.TempDir(), []string{workloads.TargetWasm}, "hello-world")
	if err != nil {
		t.Fatal(err)
	}
	ws = append(ws, echoWorkload(t, "echo", "ok"))
	rep, err := Run(ctx, Options{
		Workloads: ws,
		Modes:     []Mode{Warm},
		Peers:     []string{WasmtimePeer},
		Runs:      map[Mode]int{Warm: 5},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Notes) != 0 {
		t.Errorf("notes %q", rep.Notes)
	}
	for _, w := range []string{"hello-world", "echo"} {
		c, ok := rep.Cell(w, WasmtimePeer)
		if !ok {
			t.Fatalf("no wasmtime cell for %s: %+v", w, rep)
		}
		var names []phase.Name
		for _, p := range c.Phases {
			names = append(names, p.Name)
		}
		if want := []phase.Name{phase.Instantiate, phase.Run}; !slices.Equal(names, want) || c.Runs != 5 || c.Ratio <= 0 {
			t.Errorf("%s: wasmtime cell %+v", w, c)
		}
		t.Logf("%s: wasmtime %s (p90 %s), %.2f× wasm warm", w, formatDuration(c.Total.Median()), formatDuration(c.Total.P90()), c.Ratio)
	}
}

// TestWasmtimeFailures checks the peer reports a wrong answer, a failing
// guest and a guest that never returns, which the timeout stops.
func TestWasmtimeFailures(t *testing.T) {
	tests := []struct {
		name string
		w    Workload
		want string
	}{
		{"wrong result", moduleWorkload(t, "liar", testmodules.Echo, response("wrong"), "right"), `wrong result "wrong"`},
		{"exit status", moduleWorkload(t, "exit", testmodules.Exit, "", "x"), "bad request"},
		{"timeout", moduleWorkload(t, "loop", testmodules.Loop, "", "x"), "interrupt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := &wasmtimeColumn{env: &Env{Dir: t.TempDir()}}
			opts := Options{Workloads: []Workload{tt.w}, Timeout: time.Second}.withDefaults()
			start := time.Now()
			_, err := runColumns(t.Context(), opts, []Column{col}, nil)
			var re *RunError
			if !errors.As(err, &re) || re.Column != WasmtimePeer || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run error %v, want a RunError of column wasmtime with %q", err, tt.want)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}
