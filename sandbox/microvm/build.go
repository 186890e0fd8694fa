package microvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// BuildAgent builds a static linux/amd64 kindling-agent from the module's
// source into dir and returns its path: what Config.Agent names. It needs
// the Go toolchain and this module's source (tests, benchmarks, `make`).
func BuildAgent(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", fmt.Errorf("microvm: build agent: %w", err)
	}
	out := filepath.Join(dir, "kindling-agent")
	if err := GoBuildStatic(ctx, root, "./cmd/kindling-agent", out); err != nil {
		return "", fmt.Errorf("microvm: build agent: %w", err)
	}
	return out, nil
}

// GoBuildStatic builds the Go package pkg (relative to dir) as a static,
// stripped linux/amd64 executable at out: a function the guest can run.
func GoBuildStatic(ctx context.Context, dir, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// moduleRoot is the root of this module's source: found from this file's
// path when the source is on disk, else from `go env GOMOD`.
func moduleRoot(ctx context.Context) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "cmd", "kindling-agent")); err == nil {
			return filepath.Clean(root), nil
		}
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("locating the module root: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("locating the module root: not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}
