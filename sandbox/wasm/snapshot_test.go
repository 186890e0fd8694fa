package wasm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/sandbox/sandboxtest"
	"github.com/kindling-dev/kindling/sandbox/wasm"
)

func startMode(t testing.TB, p sandbox.Prepared) string {
	t.Helper()
	sm, ok := p.(sandbox.StartModer)
	if !ok {
		t.Fatal("prepared does not report its start mode")
	}
	mode, _ := sm.StartMode()
	return mode
}

// invokeN starts n fresh instances of p, workers at a time, and returns
// their outputs.
func invokeN(t *testing.T, p sandbox.Prepared, n, workers int, body func(i int) string, env []string) []string {
	t.Helper()
	out := make([]string, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				inst, err := p.Start(context.Background(), nil)
				if err != nil {
					out[i] = "start: " + err.Error()
					continue
				}
				var stdout, stderr bytes.Buffer
				_, err = inst.Invoke(context.Background(), &sandbox.Request{
					Stdin: strings.NewReader(body(i)), Stdout: &stdout, Stderr: &stderr, Env: env})
				inst.Close(context.Background())
				if err != nil {
					out[i] = fmt.Sprintf("error: %v (stderr %q)", err, stderr.String())
				} else {
					out[i] = stdout.String()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// A hand-written reactor: globals, memory written at initialization and a
// data segment all come back in every fresh instance, and nothing one
// instance writes is seen by another.
func TestSnapshot_WATReactor(t *testing.T) {
	dir := t.TempDir()
	d := newDriver(t, wasm.WithCacheDir(dir))
	p, err := d.Prepare(context.Background(), sandboxtest.Spec("snap", testmodules.SnapReactor, 16), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if m := startMode(t, p); m != wasm.ModeSnapshot {
		t.Fatalf("start mode %s, want snapshot", m)
	}
	image := snapshotImage(t, dir)
	for i, got := range invokeN(t, p, 200, 8, func(int) string { return "" }, nil) {
		if got != "init:41:2\n" {
			t.Fatalf("instance %d printed %q, want %q (state leaked or not restored)", i, got, "init:41:2\n")
		}
	}
	if !bytes.Equal(image, snapshotImage(t, dir)) {
		t.Fatal("instances wrote through to the snapshot image")
	}
}

// An instance that wrote more than the reset copies back (2 MiB) is reset
// by mapping the image again; every request still sees the snapshot's
// zeros, on pooled instances, concurrently.
func TestSnapshot_LargeWritesReset(t *testing.T) {
	d := newDriver(t)
	p, err := d.Prepare(context.Background(), sandboxtest.Spec("scribble", testmodules.Scribble, 16), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if m := startMode(t, p); m != wasm.ModeSnapshot {
		t.Fatalf("start mode %s, want snapshot", m)
	}
	for i, got := range invokeN(t, p, 40, 4, func(int) string { return "" }, nil) {
		if got != "" {
			t.Fatalf("request %d: %s (a previous request's bytes showed through)", i, got)
		}
	}
}

func snapshotImage(t *testing.T, cacheDir string) []byte {
	t.Helper()
	images, _ := filepath.Glob(filepath.Join(cacheDir, "snapshots", "*", "memory"))
	if len(images) != 1 {
		t.Fatalf("snapshot images: %v", images)
	}
	b, err := os.ReadFile(images[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A Go function built with the SDK: the Go runtime's heap, a package
// variable and a map set in init are restored; init saw the function's
// environment; per-request env comes from the request, not from the
// snapshot.
func TestSnapshot_GoSDK(t *testing.T) {
	bin := testmodules.BuildGoReactor(t, "internal/testmodules/gocounter")
	dir := t.TempDir()
	d := newDriver(t, wasm.WithCacheDir(dir))
	spec := sandboxtest.Spec("gocounter", bin, 64)
	spec.Env = []string{"INIT=deploy"}
	rec := phase.NewRecorder()
	p, err := d.Prepare(context.Background(), spec, rec)
	if err != nil {
		t.Fatal(err)
	}
	if m := startMode(t, p); m != wasm.ModeSnapshot {
		t.Fatalf("start mode %s, want snapshot", m)
	}
	if !hasDetail(rec.Timings(), phase.Snapshot, wasm.CacheMiss) {
		t.Errorf("first prepare: phases %+v, want snapshot cache=miss", rec.Timings())
	}
	outs := invokeN(t, p, 64, 4, func(i int) string { return fmt.Sprint("req", i) }, []string{"GREETING=hi"})
	for i, got := range outs {
		want := fmt.Sprintf("Status: 200\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ncounter=42 map=2 init=deploy env=hi body=req%d", i)
		if got != want {
			t.Fatalf("instance %d: %q, want %q", i, got, want)
		}
	}
	// A handler error is an exit with code 1 and its message on stderr.
	fail := invokeN(t, p, 1, 1, func(int) string { return "fail" }, nil)[0]
	if !strings.Contains(fail, "exited with code 1") || !strings.Contains(fail, "asked to fail") {
		t.Fatalf("failing handler: %s", fail)
	}
	p.Close(context.Background())

	// A restarted daemon finds the snapshot on disk.
	d2 := newDriver(t, wasm.WithCacheDir(dir))
	rec = phase.NewRecorder()
	p, err = d2.Prepare(context.Background(), spec, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if !hasDetail(rec.Timings(), phase.Snapshot, wasm.CacheDisk) || !hasDetail(rec.Timings(), phase.Compile, wasm.CacheDisk) {
		t.Errorf("after restart: phases %+v, want snapshot and compile from disk", rec.Timings())
	}
	if got := invokeN(t, p, 1, 1, func(int) string { return "x" }, nil)[0]; !strings.Contains(got, "counter=42 map=2") {
		t.Fatalf("after restart: %q", got)
	}
}

// A corrupt snapshot on disk is detected and captured again.
func TestSnapshot_CorruptOnDisk(t *testing.T) {
	dir := t.TempDir()
	spec := sandboxtest.Spec("snap", testmodules.SnapReactor, 16)
	d := newDriver(t, wasm.WithCacheDir(dir))
	p, err := d.Prepare(context.Background(), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Close(context.Background())
	images, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "memory"))
	if len(images) != 1 {
		t.Fatalf("snapshot images on disk: %v", images)
	}
	os.Chmod(images[0], 0o644)
	if err := os.WriteFile(images[0], []byte("truncated"), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := phase.NewRecorder()
	p, err = newDriver(t, wasm.WithCacheDir(dir)).Prepare(context.Background(), spec, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if !hasDetail(rec.Timings(), phase.Snapshot, wasm.CacheMiss) {
		t.Errorf("corrupt snapshot not recaptured: %+v", rec.Timings())
	}
	if got := invokeN(t, p, 1, 1, func(int) string { return "" }, nil)[0]; got != "init:41:2\n" {
		t.Fatalf("after recapture: %q", got)
	}
}

func TestSnapshot_CommandFallback(t *testing.T) {
	d := newDriver(t)
	p, err := d.Prepare(context.Background(), sandboxtest.Spec("hello", testmodules.Hello, 16), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	mode, reason := p.(sandbox.StartModer).StartMode()
	if mode != wasm.ModeCommand || !strings.Contains(reason, "command module") {
		t.Fatalf("mode %s reason %q", mode, reason)
	}
}

func TestSnapshot_InitFailure(t *testing.T) {
	// A reactor whose initialization traps: rejected at prepare with the reason.
	d := newDriver(t)
	_, err := d.Prepare(context.Background(), sandboxtest.Spec("bad-init", testmodules.BadInit, 16), nil)
	if err == nil || !strings.Contains(err.Error(), "initialization failed") || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("Prepare = %v", err)
	}
	if !isInvalid(err) {
		t.Fatalf("init failure is not invalid argument: %v", err)
	}
}

func isInvalid(err error) bool { return errors.Is(err, errdefs.ErrInvalidArgument) }

func hasDetail(ts []phase.Timing, n phase.Name, detail string) bool {
	for _, t := range ts {
		if t.Name == n && t.Detail == detail {
			return true
		}
	}
	return false
}

// Initialization draws real randomness: two deployments of one module (two
// daemons, each taking its own snapshot) seed the Go runtime differently,
// while every instance of one snapshot shares its seed.
func TestSnapshot_InitRandomness(t *testing.T) {
	bin := testmodules.BuildGoReactor(t, "internal/testmodules/gocounter")
	seed := func(d *wasm.Driver) []string {
		p, err := d.Prepare(context.Background(), sandboxtest.Spec("gocounter", bin, 64), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close(context.Background())
		return invokeN(t, p, 2, 1, func(int) string { return "seed" }, nil)
	}
	a := seed(newDriver(t, wasm.WithCacheDir(t.TempDir())))
	b := seed(newDriver(t, wasm.WithCacheDir(t.TempDir())))
	if a[0] != a[1] {
		t.Errorf("two instances of one snapshot: seeds %q and %q", a[0], a[1])
	}
	if a[0] == b[0] {
		t.Errorf("two snapshots of one module drew the same seed: %q", a[0])
	}
}
