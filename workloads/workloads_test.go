package workloads

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

func TestAllAndLookup(t *testing.T) {
	seen := make(map[string]bool)
	for _, w := range All() {
		if w.Name == "" || w.Description == "" || w.Expected == "" {
			t.Errorf("incomplete workload %+v", w)
		}
		if seen[w.Name] {
			t.Errorf("duplicate workload %q", w.Name)
		}
		seen[w.Name] = true
		if got, ok := Lookup(w.Name); !ok || got != w {
			t.Errorf("Lookup(%q) = %+v, %v", w.Name, got, ok)
		}
		if _, err := os.Stat(filepath.Join(w.Name, "main.go")); err != nil {
			t.Errorf("workload %q has no source: %v", w.Name, err)
		}
	}
	if len(seen) != 12 {
		t.Errorf("All() has %d workloads, want 12", len(seen))
	}
	if _, ok := Lookup("no-such-workload"); ok {
		t.Error("Lookup found a workload that does not exist")
	}
}

func TestParseResult(t *testing.T) {
	tests := []struct {
		name, stdout, want string
		wantErr            bool
	}{
		{name: "lf", stdout: "Content-Type: application/json\n\n{\"workload\":\"x\",\"result\":\"abc\"}\n", want: "abc"},
		{name: "crlf", stdout: "Content-Type: application/json\r\nStatus: 200 OK\r\n\r\n{\"result\":\"42\"}", want: "42"},
		{name: "escaped", stdout: "Content-Type: application/json\n\n{\"result\":\"a \\\"b\\\"\"}\n", want: `a "b"`},
		{name: "no header block", stdout: "{\"result\":\"abc\"}\n", wantErr: true},
		{name: "no blank line", stdout: "Content-Type: application/json\n", wantErr: true},
		{name: "missing result", stdout: "Content-Type: application/json\n\n{\"workload\":\"x\"}\n", wantErr: true},
		{name: "empty result", stdout: "Content-Type: application/json\n\n{\"result\":\"\"}\n", wantErr: true},
		{name: "not json", stdout: "Content-Type: text/plain\n\nhello\n", wantErr: true},
		{name: "empty", stdout: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseResult([]byte(tt.stdout))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseResult = %q, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseResult = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestBuildRejectsBadInput(t *testing.T) {
	ctx := t.Context()
	if _, err := Build(ctx, "plan9", t.TempDir()); err == nil {
		t.Error("Build accepted an unknown target")
	}
	if _, err := Build(ctx, TargetWasm, t.TempDir(), "no-such-workload"); err == nil {
		t.Error("Build accepted an unknown workload")
	}
}

func TestBuildSubset(t *testing.T) {
	dir := t.TempDir()
	paths, err := Build(t.Context(), TargetLinux, dir, "hello-world")
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "hello-world")
	if len(paths) != 1 || paths["hello-world"] != want {
		t.Fatalf("Build = %v, want only hello-world at %s", paths, want)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "hello-world" {
		t.Errorf("output directory holds %v, want only hello-world", entries)
	}
}

// testCase is one run of a workload and what it must produce.
type testCase struct {
	name     string // subtest name
	workload string
	size     string // KINDLING_SIZE, empty to leave it unset
	stdin    string
	want     string // expected result; ignored when wantExit is non-zero
	wantExit int
}

// testCases returns every workload at its default size, plus a few runs
// that exercise the rest of the function contract.
func testCases() []testCase {
	var cases []testCase
	for _, w := range All() {
		cases = append(cases, testCase{name: w.Name, workload: w.Name, want: w.Expected})
	}
	return append(cases,
		testCase{name: "hello-world-body", workload: "hello-world", stdin: "kindling\n", want: "Hello, kindling!"},
		testCase{name: "mmap-size-1", workload: "mmap", size: "1", want: "256-548163790976"},
		testCase{name: "read-list-size-Small", workload: "read-list", size: "Small", want: mustLookup("read-list").Expected},
		testCase{name: "matmul-bad-size", workload: "matmul", size: "huge", wantExit: 1},
		testCase{name: "pagerank-zero-size", workload: "pagerank", size: "0", wantExit: 1},
	)
}

func mustLookup(name string) Workload {
	w, ok := Lookup(name)
	if !ok {
		panic("no workload " + name)
	}
	return w
}

// runFunc runs one workload and returns its stdout, stderr and exit code.
type runFunc func(ctx context.Context, tc testCase) (stdout, stderr []byte, exit int, err error)

// TestWorkloads builds every workload for both targets, runs the WebAssembly
// modules under wazero and the Linux binaries natively, and checks that both
// produce the expected results.
func TestWorkloads(t *testing.T) {
	t.Run("wasm", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		paths, err := Build(ctx, TargetWasm, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		rt := newRuntime(ctx, t, paths)
		compiled := compileAll(ctx, t, rt, paths)
		runCases(t, "under wazero", func(ctx context.Context, tc testCase) ([]byte, []byte, int, error) {
			return runWasm(ctx, rt, compiled[tc.workload], tc)
		})
	})

	t.Run("linux", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		paths, err := Build(ctx, TargetLinux, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		runCases(t, "natively", func(ctx context.Context, tc testCase) ([]byte, []byte, int, error) {
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, paths[tc.workload])
			cmd.Env = []string{} // not nil: do not inherit KINDLING_SIZE
			if tc.size != "" {
				cmd.Env = append(cmd.Env, "KINDLING_SIZE="+tc.size)
			}
			cmd.Stdin = strings.NewReader(tc.stdin)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				return stdout.Bytes(), stderr.Bytes(), exitErr.ExitCode(), nil
			}
			return stdout.Bytes(), stderr.Bytes(), 0, err
		})
	})
}

// runCases runs every test case with run, one at a time so that the logged
// wall times do not disturb each other.
func runCases(t *testing.T, where string, run runFunc) {
	for _, tc := range testCases() {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			stdout, stderr, exit, err := run(t.Context(), tc)
			elapsed := time.Since(start)
			if err != nil {
				t.Fatalf("run: %v\nstderr: %s", err, stderr)
			}
			if exit != tc.wantExit {
				t.Fatalf("exit code %d, want %d\nstderr: %s", exit, tc.wantExit, stderr)
			}
			if tc.wantExit != 0 {
				if len(stderr) == 0 {
					t.Error("failed without a message on stderr")
				}
				return
			}
			t.Logf("ran in %v %s", elapsed.Round(time.Millisecond), where)
			got, err := ParseResult(stdout)
			if err != nil {
				t.Fatalf("%v\nstdout: %s", err, stdout)
			}
			if got != tc.want {
				t.Errorf("result = %q, want %q", got, tc.want)
			}
		})
	}
}

// runWasm instantiates compiled, which runs the module to completion.
func runWasm(ctx context.Context, rt wazero.Runtime, compiled wazero.CompiledModule, tc testCase) (stdout, stderr []byte, exit int, err error) {
	var outBuf, errBuf bytes.Buffer
	cfg := wazero.NewModuleConfig().
		WithName(""). // allow several instances of one module
		WithArgs(tc.workload).
		WithStdin(strings.NewReader(tc.stdin)).
		WithStdout(&outBuf).
		WithStderr(&errBuf).
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithRandSource(rand.Reader)
	if tc.size != "" {
		cfg = cfg.WithEnv("KINDLING_SIZE", tc.size)
	}
	mod, err := rt.InstantiateModule(ctx, compiled, cfg)
	var exitErr *sys.ExitError
	if errors.As(err, &exitErr) {
		return outBuf.Bytes(), errBuf.Bytes(), int(exitErr.ExitCode()), nil
	}
	if err != nil {
		return outBuf.Bytes(), errBuf.Bytes(), 0, err
	}
	return outBuf.Bytes(), errBuf.Bytes(), 0, mod.Close(ctx)
}

// BenchmarkWasm measures each workload's wall time at its default size under
// wazero, including instantiation and the Go runtime's start-up but not
// compilation.
func BenchmarkWasm(b *testing.B) {
	ctx := b.Context()
	paths, err := Build(ctx, TargetWasm, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	rt := newRuntime(ctx, b, paths)
	compiled := compileAll(ctx, b, rt, paths)
	for _, w := range All() {
		b.Run(w.Name, func(b *testing.B) {
			tc := testCase{workload: w.Name}
			for b.Loop() {
				if _, stderr, exit, err := runWasm(ctx, rt, compiled[w.Name], tc); err != nil || exit != 0 {
					b.Fatalf("run: exit %d, %v\nstderr: %s", exit, err, stderr)
				}
			}
		})
	}
}

// newRuntime returns a wazero runtime whose compiled code is cached across
// test runs, since compiling the modules dominates the test's run time. The
// modules at paths are compiled into the cache first when the race detector
// is on: it slows wazero's compiler down several times, so they are compiled
// by an uninstrumented helper process instead.
func newRuntime(ctx context.Context, t testing.TB, paths map[string]string) wazero.Runtime {
	t.Helper()
	dir := t.TempDir()
	if base, err := os.UserCacheDir(); err == nil {
		dir = filepath.Join(base, "kindling", "workloads-test-wazero")
	}
	if raceEnabled {
		precompile(ctx, t, dir, paths)
	}
	cache, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(cache))
	t.Cleanup(func() {
		rt.Close(ctx)
		cache.Close(ctx)
	})
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	return rt
}

// precompile fills the compilation cache dir with the modules at paths using
// the internal/precompile command, built without the race detector.
func precompile(ctx context.Context, t testing.TB, dir string, paths map[string]string) {
	t.Helper()
	root, err := RepoRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// wazero keys its cache by its own version, which it reads from the build
	// info; test binaries may lack it and then report "dev". Make the helper
	// report the same version as this process.
	wazeroVersion := "dev"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/tetratelabs/wazero" && dep.Version != "" && dep.Version != "(devel)" {
				wazeroVersion = dep.Version
			}
		}
	}
	args := []string{"run",
		"-ldflags=-X=github.com/tetratelabs/wazero/internal/version.version=" + wazeroVersion,
		"./workloads/internal/precompile", "-cache", dir}
	for _, path := range paths {
		args = append(args, path)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("precompiling: %v\n%s", err, out)
	}
	t.Logf("precompiled %d modules without the race detector in %v", len(paths), time.Since(start).Round(time.Millisecond))
}

// compileAll compiles the modules concurrently, one goroutine per CPU.
func compileAll(ctx context.Context, t testing.TB, rt wazero.Runtime, paths map[string]string) map[string]wazero.CompiledModule {
	t.Helper()
	start := time.Now()
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		compiled = make(map[string]wazero.CompiledModule, len(paths))
		errs     []error
		sem      = make(chan struct{}, max(runtime.NumCPU(), 1))
	)
	for name, path := range paths {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			bin, err := os.ReadFile(path)
			if err == nil {
				var m wazero.CompiledModule
				if m, err = rt.CompileModule(ctx, bin); err == nil {
					mu.Lock()
					compiled[name] = m
					mu.Unlock()
					return
				}
			}
			mu.Lock()
			errs = append(errs, fmt.Errorf("compiling %s: %w", name, err))
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("compiled %d modules in %v", len(compiled), time.Since(start).Round(time.Millisecond))
	return compiled
}

func TestBinaryCheck(t *testing.T) {
	ok := []byte("Content-Type: application/json\n\n{\"workload\":\"json\",\"result\":\"abc\"}\n")
	for _, tc := range []struct {
		name     string
		expected string
		stdout   []byte
		wantErr  bool
	}{
		{"expected result", "abc", ok, false},
		{"nothing expected", "", []byte("anything"), false},
		{"wrong result", "xyz", ok, true},
		{"no result", "abc", []byte("garbage"), true},
	} {
		err := Binary{Name: "json", Expected: tc.expected}.Check(tc.stdout)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: Check = %v, want error %v", tc.name, err, tc.wantErr)
		}
	}
}
