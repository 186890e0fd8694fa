package workloads_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/sandbox/sandboxtest"
	"github.com/kindling-dev/kindling/sandbox/wasm"
	"github.com/kindling-dev/kindling/workloads"
)

// snapshotWorkloads are the workloads whose snapshot path is tested (and
// benchmarked against the plain path): those issue 4 names, and the hello.
var snapshotWorkloads = []string{"hello-world", "json", "pyaes", "chameleon"}

// The workloads built as reactors deploy as snapshots through kindling's
// wasm sandbox and compute the same results from restored instances, fresh
// and pooled.
func TestReactorsFromSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and snapshots Go reactors; skipped with -short")
	}
	ctx := context.Background()
	paths, err := workloads.Build(ctx, workloads.TargetWasmReactor, t.TempDir(), snapshotWorkloads...)
	if err != nil {
		t.Fatal(err)
	}
	d, err := wasm.New(ctx, wasm.WithCacheDir(filepath.Join(os.TempDir(), "kindling-test-reactors")))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	for _, name := range snapshotWorkloads {
		t.Run(name, func(t *testing.T) {
			w, _ := workloads.Lookup(name)
			bin, err := os.ReadFile(paths[name])
			if err != nil {
				t.Fatal(err)
			}
			p, err := d.Prepare(ctx, sandbox.BytesSpec(name, bin, 256), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close(ctx)
			if mode, reason := p.(sandbox.StartModer).StartMode(); mode != wasm.ModeSnapshot {
				t.Fatalf("start mode %s (%s), want snapshot", mode, reason)
			}
			for i := 0; i < 3; i++ {
				inst, err := p.Start(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				var out, errOut bytes.Buffer
				ictx, cancel := context.WithTimeout(ctx, time.Minute)
				_, err = inst.Invoke(ictx, &sandbox.Request{Stdin: bytes.NewReader(nil), Stdout: &out, Stderr: &errOut})
				cancel()
				inst.Close(ctx)
				if err != nil {
					t.Fatalf("run %d: %v (stderr %q)", i, err, errOut.String())
				}
				got, err := workloads.ParseResult(out.Bytes())
				if err != nil || got != w.Expected {
					t.Fatalf("run %d: result %q (%v), want %q", i, got, err, w.Expected)
				}
			}
		})
	}
}

// benchSizes are small problem sizes (KINDLING_SIZE) for BenchmarkSnapshot,
// so that start-up, not the computation, is what it compares.
var benchSizes = map[string]string{"json": "10", "pyaes": "4", "chameleon": "5"}

// BenchmarkSnapshot compares, in one run, a fresh instance + run of each
// workload from its snapshot (the reactor build) with the plain path (the
// command build: a new instance that starts the Go runtime), both through
// kindling's wasm sandbox, at small sizes. KiB-private/op is the memory each
// instance made its own.
func BenchmarkSnapshot(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	commands, err := workloads.Build(ctx, workloads.TargetWasm, dir, snapshotWorkloads...)
	if err != nil {
		b.Fatal(err)
	}
	reactors, err := workloads.Build(ctx, workloads.TargetWasmReactor, dir, snapshotWorkloads...)
	if err != nil {
		b.Fatal(err)
	}
	d, err := wasm.New(ctx, wasm.WithCacheDir(filepath.Join(os.TempDir(), "kindling-test-reactors")), wasm.WithMemoryAccounting())
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close(ctx)
	for _, name := range snapshotWorkloads {
		for _, mode := range []struct {
			name  string
			paths map[string]string
		}{{"plain", commands}, {"snapshot", reactors}} {
			b.Run(name+"/"+mode.name, func(b *testing.B) {
				bin, err := os.ReadFile(mode.paths[name])
				if err != nil {
					b.Fatal(err)
				}
				spec := sandbox.BytesSpec(name, bin, 256)
				if size, ok := benchSizes[name]; ok {
					spec.Env = []string{"KINDLING_SIZE=" + size}
				}
				sandboxtest.BenchmarkColdStart(b, d, spec, nil)
			})
		}
	}
}
