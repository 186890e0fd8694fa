package testmodules

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// RepoRoot returns the repository's root directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the repository")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BuildGo builds the Go package at pkg (relative to the repository root)
// as a WASI command module and returns its bytes.
func BuildGo(t testing.TB, pkg string) []byte { return buildGo(t, pkg) }

// BuildGoReactor builds the Go package at pkg as a WASI reactor
// (-buildmode=c-shared), the snapshot-friendly form of an SDK function.
func BuildGoReactor(t testing.TB, pkg string) []byte { return buildGo(t, pkg, "-buildmode=c-shared") }

func buildGo(t testing.TB, pkg string, flags ...string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "module.wasm")
	args := append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", out}, flags...)
	cmd := exec.Command("go", append(args, "./"+pkg)...)
	cmd.Dir = RepoRoot(t)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s for wasip1: %v\n%s", pkg, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
