package workloads

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildAgent builds a static linux/amd64 kindling-agent from the module's
// source into dir and returns its path: the agent the oci and microvm
// sandboxes run functions under. It needs the Go toolchain and this
// module's source (tests, benchmarks, `make`).
func BuildAgent(ctx context.Context, dir string) (string, error) {
	root, err := RepoRoot(ctx)
	if err != nil {
		return "", fmt.Errorf("build agent: %w", err)
	}
	out := filepath.Join(dir, "kindling-agent")
	if err := BuildStatic(ctx, root, "./cmd/kindling-agent", out); err != nil {
		return "", fmt.Errorf("build agent: %w", err)
	}
	return out, nil
}

// BuildStatic builds the Go package pkg (relative to dir) as a static,
// stripped linux/amd64 executable at out: a function a container or a
// microVM guest can run.
func BuildStatic(ctx context.Context, dir, pkg, out string) error {
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
