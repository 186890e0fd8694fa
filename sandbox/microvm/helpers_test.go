package microvm

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/workloads"
)

// fixtureNames are the programs under testdata/, built once per test run.
var fixtureNames = []string{"hello", "echo", "trap", "exit", "loop", "oom", "counter", "panic", "halt"}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(crashChild())
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// requireHost skips a test that needs what this host may lack.
func requireHost(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("needs qemu-system-x86_64 (Debian package qemu-system-x86)")
	}
	if k, _ := filepath.Glob("/boot/vmlinuz-*"); len(k) == 0 {
		t.Skip("needs a guest kernel in /boot/vmlinuz-* (Debian package linux-image-amd64)")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command to build the agent and fixtures")
	}
}

// binaries builds the agent and every fixture once and returns the
// directory holding them (kindling-agent and one file per fixture).
func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		ctx := context.Background()
		if buildDir, buildErr = os.MkdirTemp("", "kindling-microvm-bin-"); buildErr != nil {
			return
		}
		if _, buildErr = workloads.BuildAgent(ctx, buildDir); buildErr != nil {
			return
		}
		var pkgs []string
		for _, f := range fixtureNames {
			pkgs = append(pkgs, "./testdata/"+f)
		}
		cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", buildDir + "/"}, pkgs...)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{err, string(out)}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.out) }

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(binaries(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cacheDir keeps the extracted guest kernel between test runs: extracting
// it takes seconds.
func cacheDir() string { return filepath.Join(os.TempDir(), "kindling-microvm-kernel-cache") }

func testConfig(t testing.TB) Config {
	t.Helper()
	requireHost(t)
	return Config{
		Root:     t.TempDir(),
		CacheDir: cacheDir(),
		Agent:    filepath.Join(binaries(t), "kindling-agent"),
		MemoryMB: 128,
	}
}

// newTestDriver returns a driver closed, and checked for leftovers, at
// the end of the test.
func newTestDriver(t testing.TB, opts ...Option) *Driver {
	t.Helper()
	cfg := testConfig(t)
	d, err := New(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(context.Background()); err != nil {
			t.Errorf("driver close: %v", err)
		}
		checkClean(t, cfg.Root)
	})
	return d
}

func newTestManager(t testing.TB) *Manager {
	t.Helper()
	cfg := testConfig(t)
	m, err := NewManager(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("manager close: %v", err)
		}
		checkClean(t, cfg.Root)
	})
	return m
}

// checkClean fails unless no QEMU runs for root and no VM or template
// file is left in it.
func checkClean(t testing.TB, root string) {
	t.Helper()
	if pids := processesNamed(vmName(filepath.Join(root, dirVMs) + "/")); len(pids) > 0 {
		t.Errorf("QEMU processes left running: %v", pids)
	}
	for _, d := range []string{dirVMs, dirTmp} {
		if entries, _ := os.ReadDir(filepath.Join(root, d)); len(entries) > 0 {
			t.Errorf("%s not empty: %v", d, entries)
		}
	}
	snaps, _ := os.ReadDir(filepath.Join(root, dirSnapshots))
	for _, s := range snaps {
		if meta, err := readMeta(filepath.Join(root, dirSnapshots, s.Name())); err != nil || meta.Template {
			t.Errorf("template snapshot left: %s", s.Name())
		}
	}
}

func timeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
