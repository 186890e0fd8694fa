// Package sandboxtest is the conformance suite every sandbox driver passes,
// and the benchmark body every driver is measured with, so that results of
// different sandboxes are comparable.
//
// A driver's test supplies Fixtures: the same small programs built for that
// sandbox (a WebAssembly module, a container image, a VM image).
package sandboxtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
)

// Artifact is one fixture program in the driver's own format.
type Artifact []byte

// Fixtures are the programs the suite runs. Each must behave as described.
type Fixtures struct {
	Hello   Artifact // writes "hello, world\n" to stdout, exits 0
	Echo    Artifact // copies stdin to stdout
	Trap    Artifact // crashes (wasm trap, SIGSEGV, ...)
	Exit    Artifact // writes "bad request\n" to stderr, exits 3
	Loop    Artifact // never returns
	OOM     Artifact // allocates memory until it fails
	Counter Artifact // increments state initialised to zero and prints "11"
	Invalid Artifact // not a valid artifact for this driver
	// MemoryMB is the memory limit used for every fixture (default 64).
	MemoryMB int
}

// Spec returns a sandbox.Spec for an artifact, named name.
func Spec(name string, a Artifact, memoryMB int) sandbox.Spec {
	return sandbox.BytesSpec(name, a, memoryMB)
}

// Output is what one Invoke produced.
type Output struct {
	Stdout, Stderr string
	Result         sandbox.Result
	Phases         []phase.Timing
	Err            error
}

// Invoke prepares spec on d, starts one instance, invokes it once with
// stdin and closes everything.
func Invoke(ctx context.Context, d sandbox.Driver, spec sandbox.Spec, stdin string, timeout time.Duration) (Output, error) {
	rec := phase.NewRecorder()
	p, err := d.Prepare(ctx, spec, rec)
	if err != nil {
		return Output{}, err
	}
	defer p.Close(ctx)
	inst, err := p.Start(ctx, rec)
	if err != nil {
		return Output{}, fmt.Errorf("start: %w", err)
	}
	defer inst.Close(ctx)
	var stdout, stderr bytes.Buffer
	ictx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := inst.Invoke(ictx, &sandbox.Request{
		Stdin:  strings.NewReader(stdin),
		Stdout: &stdout,
		Stderr: &stderr,
		Phases: rec,
	})
	return Output{Stdout: stdout.String(), Stderr: stderr.String(), Result: res, Phases: rec.Timings(), Err: err}, nil
}

// Run runs the conformance suite against the driver newDriver returns.
func Run(t *testing.T, newDriver func(t *testing.T) sandbox.Driver, fx Fixtures) {
	if fx.MemoryMB == 0 {
		fx.MemoryMB = 64
	}
	ctx := context.Background()
	d := newDriver(t)

	invoke := func(t *testing.T, name string, a Artifact, stdin string, timeout time.Duration) Output {
		t.Helper()
		out, err := Invoke(ctx, d, Spec(name, a, fx.MemoryMB), stdin, timeout)
		if err != nil {
			t.Fatalf("%s: prepare/start: %v", name, err)
		}
		return out
	}
	wantKind := func(t *testing.T, out Output, kind errdefs.Kind) *errdefs.FunctionError {
		t.Helper()
		fe, ok := errdefs.AsFunctionError(out.Err)
		if !ok {
			t.Fatalf("error = %v (stdout %q), want a FunctionError of kind %s", out.Err, out.Stdout, kind)
		}
		if fe.Kind != kind {
			t.Fatalf("kind = %s (%v), want %s", fe.Kind, fe, kind)
		}
		return fe
	}

	t.Run("Hello", func(t *testing.T) {
		out := invoke(t, "hello", fx.Hello, "", 10*time.Second)
		if out.Err != nil || out.Stdout != "hello, world\n" {
			t.Fatalf("got %q, %v; want %q", out.Stdout, out.Err, "hello, world\n")
		}
		for _, name := range []phase.Name{phase.Compile, phase.Instantiate, phase.Run} {
			if !hasPhase(out.Phases, name) {
				t.Errorf("phase %s not recorded; got %+v", name, out.Phases)
			}
		}
	})
	t.Run("Echo", func(t *testing.T) {
		body := strings.Repeat("kindling ", 20000) // larger than one read
		out := invoke(t, "echo", fx.Echo, body, 10*time.Second)
		if out.Err != nil || out.Stdout != body {
			t.Fatalf("echo returned %d bytes, err %v; want %d bytes", len(out.Stdout), out.Err, len(body))
		}
	})
	t.Run("Trap", func(t *testing.T) {
		out := invoke(t, "trap", fx.Trap, "", 10*time.Second)
		wantKind(t, out, errdefs.KindTrap)
	})
	t.Run("Exit", func(t *testing.T) {
		out := invoke(t, "exit", fx.Exit, "", 10*time.Second)
		fe := wantKind(t, out, errdefs.KindExit)
		if fe.ExitCode != 3 || out.Result.ExitCode != 3 {
			t.Errorf("exit code = %d (result %d), want 3", fe.ExitCode, out.Result.ExitCode)
		}
		if out.Stderr != "bad request\n" {
			t.Errorf("stderr = %q, want %q", out.Stderr, "bad request\n")
		}
	})
	t.Run("Timeout", func(t *testing.T) {
		out := invoke(t, "loop", fx.Loop, "", 200*time.Millisecond)
		fe := wantKind(t, out, errdefs.KindTimeout)
		if !errors.Is(fe, context.DeadlineExceeded) {
			t.Errorf("timeout error does not wrap context.DeadlineExceeded: %v", fe)
		}
	})
	t.Run("OOM", func(t *testing.T) {
		out := invoke(t, "oom", fx.OOM, "", 30*time.Second)
		wantKind(t, out, errdefs.KindOOM)
	})
	t.Run("Invalid", func(t *testing.T) {
		_, err := d.Prepare(ctx, Spec("invalid", fx.Invalid, fx.MemoryMB), nil)
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("Prepare(invalid) = %v, want ErrInvalidArgument", err)
		}
	})
	t.Run("Isolation", func(t *testing.T) {
		// The same prepared function, many instances, concurrently: each
		// starts from pristine state.
		spec := Spec("counter", fx.Counter, fx.MemoryMB)
		p, err := d.Prepare(ctx, spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close(ctx)
		const workers, each = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					inst, err := p.Start(ctx, nil)
					if err != nil {
						errs <- err
						return
					}
					var out bytes.Buffer
					_, err = inst.Invoke(ctx, &sandbox.Request{Stdout: &out})
					inst.Close(ctx)
					if err != nil {
						errs <- err
					} else if out.String() != "11" {
						errs <- fmt.Errorf("state leaked between instances: got %q, want %q", out.String(), "11")
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("SurvivesFailures", func(t *testing.T) {
		// After every kind of failure above, the driver still serves.
		out := invoke(t, "hello-again", fx.Hello, "", 10*time.Second)
		if out.Err != nil || out.Stdout != "hello, world\n" {
			t.Fatalf("after failures: got %q, %v", out.Stdout, out.Err)
		}
	})
}

func hasPhase(ts []phase.Timing, name phase.Name) bool {
	for _, t := range ts {
		if t.Name == name {
			return true
		}
	}
	return false
}

// BenchmarkColdStart is the shared benchmark body: each iteration starts a
// fresh instance of an already-prepared function and invokes it once.
func BenchmarkColdStart(b *testing.B, d sandbox.Driver, spec sandbox.Spec, stdin []byte) {
	ctx := context.Background()
	p, err := d.Prepare(ctx, spec, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(ctx)
	var out bytes.Buffer
	r := bytes.NewReader(stdin)
	var touched uint64
	lat := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		out.Reset()
		r.Reset(stdin)
		inst, err := p.Start(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		res, err := inst.Invoke(ctx, &sandbox.Request{Stdin: r, Stdout: &out})
		if err != nil {
			b.Fatal(err)
		}
		touched += res.TouchedBytes
		inst.Close(ctx)
		lat[i] = time.Since(start)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*9/10].Nanoseconds()), "p90-ns")
	if touched > 0 {
		// The memory one instance made its own: what N concurrent instances cost.
		b.ReportMetric(float64(touched)/float64(b.N)/1024, "KiB-private/op")
	}
}
