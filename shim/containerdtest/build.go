package containerdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// The shim's two binaries: ShimBinary is the file containerd looks for on
// its PATH for the runtime type io.containerd.kindling.v1; it starts
// ServerBinary from its own directory.
const (
	ShimBinary   = "containerd-shim-kindling-v1"
	ServerBinary = "kindling-shim-server"
)

// ModuleRoot is the kindling repository this package was built from.
func ModuleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the kindling sources")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("kindling sources not found at %s: %w", root, err)
	}
	return root, nil
}

// BuildShim builds the shim's binaries (ShimBinary, ServerBinary) into
// dir from the kindling sources, as a release does (static, stripped).
// With race, they are built with the race detector instead.
func BuildShim(ctx context.Context, dir string, race bool) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	env := os.Environ()
	if race {
		args = append(args, "-race")
	} else {
		args = append(args, "-trimpath", "-ldflags=-s -w")
		env = append(env, "CGO_ENABLED=0")
	}
	args = append(args, "./cmd/containerd-shim-kindling-v1", "./cmd/containerd-shim-kindling-v1/kindling-shim-server")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the shim: %w\n%s", err, b)
	}
	return nil
}

// Programs for the runc side of the benchmark and for CRI's pause image,
// built as static Linux binaries.
const (
	// HelloSource prints "hello, world" like the hello wasm test module.
	HelloSource = `package main

import "os"

func main() { os.Stdout.WriteString("hello, world\n") }
`
	// PauseSource waits for SIGTERM or SIGINT (SIGKILL needs no help),
	// as Kubernetes' pause container does.
	PauseSource = `package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
`
)

// BuildStatic builds a one-file Go program as a static binary at out.
func BuildStatic(ctx context.Context, out, source string) error {
	dir, err := os.MkdirTemp("", "kindling-static-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module program\n\ngo 1.21\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(source), 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-mod=mod", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build static program: %w\n%s", err, b)
	}
	return nil
}
