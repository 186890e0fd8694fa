package wasm

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/sandbox"
)

// spinners are guests that never return: an instrumented command and
// snapshot reactor, and a module kindling cannot instrument.
var spinners = []struct {
	name          string
	bin           []byte
	interruptible bool
}{
	{"command", testmodules.Loop, true},
	{"reactor", testmodules.SpinReactor, true},
	{"uninstrumentable", testmodules.Uninstrumentable, false},
}

// prepareInternal prepares bin in a new Driver; the test's end closes both.
func prepareInternal(t *testing.T, name string, bin []byte) *prepared {
	t.Helper()
	ctx := context.Background()
	d, err := New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(ctx) })
	p, err := d.Prepare(ctx, sandbox.BytesSpec(name, bin, 16), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(ctx) })
	return p.(*prepared)
}

// A guest that never returns is stopped at its deadline on both paths: the
// interrupt flag of an instrumented module (command and snapshot reactor)
// and wazero closing a module it could not instrument.
func TestDeadlineStopsGuest(t *testing.T) {
	for _, tc := range spinners {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p := prepareInternal(t, tc.name, tc.bin)
			prog := p.module
			if p.snap != nil {
				prog = p.snap.module
			}
			if prog.interruptible != tc.interruptible {
				t.Fatalf("interruptible = %v, want %v", prog.interruptible, tc.interruptible)
			}
			// Twice: a stopped reactor must not be pooled and handed out again.
			for i := 0; i < 2; i++ {
				inst, err := p.Start(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				var out bytes.Buffer
				_, err = inst.Invoke(cctx, &sandbox.Request{Stdout: &out})
				cancel()
				inst.Close(ctx)
				if fe, ok := errdefs.AsFunctionError(err); !ok || fe.Kind != errdefs.KindTimeout {
					t.Fatalf("invocation %d: err = %v, want a timeout", i, err)
				}
			}
		})
	}
}

// Without a deadline the flag is never raised: an instrumented module
// behaves as the original.
func TestInstrumentedModuleRunsUnchanged(t *testing.T) {
	ctx := context.Background()
	p := prepareInternal(t, "echo", testmodules.Echo)
	if !p.module.interruptible {
		t.Fatal("echo was not instrumented")
	}
	inst, err := p.Start(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(ctx)
	var out bytes.Buffer
	body := bytes.Repeat([]byte("kindling "), 10000) // many iterations of echo's loop
	if _, err := inst.Invoke(ctx, &sandbox.Request{Stdin: bytes.NewReader(body), Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), body) {
		t.Fatalf("echo returned %d bytes, want %d", out.Len(), len(body))
	}
}

// Compiled guest code cannot be preempted, so a guest that never left it
// would stall the garbage collector's stop-the-world phases, and the whole
// process with them (GC waits for the guest; the deadline that would stop
// the guest waits for the GC). The instrumented guest yields every
// wasmbin.YieldEvery iterations: a collection finishes while it spins,
// with no deadline to stop it, and the guest is then cancelled.
func TestSpinningGuestLetsGCRun(t *testing.T) {
	for _, tc := range spinners {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p := prepareInternal(t, tc.name, tc.bin)
			inst, err := p.Start(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close(ctx)
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			returned := make(chan error, 1)
			go func() {
				_, err := inst.Invoke(cctx, &sandbox.Request{Stdout: io.Discard})
				returned <- err
			}()
			// Collect several times while the guest spins (at least one
			// collection overlaps it: the guest runs until cancelled).
			collected := make(chan struct{})
			go func() {
				for i := 0; i < 5; i++ {
					time.Sleep(10 * time.Millisecond)
					runtime.GC()
				}
				close(collected)
			}()
			select {
			case <-collected:
			case err := <-returned:
				t.Fatalf("guest returned before it was cancelled: %v", err)
			case <-time.After(time.Minute):
				t.Fatal("garbage collection stalled behind a spinning guest")
			}
			cancel()
			if err := <-returned; err == nil {
				t.Fatal("cancelled guest returned no error")
			}
		})
	}
}
