// Package microvmtest is the set-up shared by the tests of packages that
// boot VMs through a daemon: the check that this host can, and the guest
// agent and fixtures built for the guest.
package microvmtest

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/workloads"
)

// SkipUnlessHost skips t, with the reason, under -short or when the host
// lacks QEMU or a guest kernel.
func SkipUnlessHost(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots VMs; skipped with -short")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("needs qemu-system-x86_64 (Debian package qemu-system-x86)")
	}
	if kernels, _ := filepath.Glob("/boot/vmlinuz-*"); len(kernels) == 0 {
		t.Skip("needs a guest kernel in /boot/vmlinuz-* (Debian package linux-image-amd64)")
	}
}

// Build builds the static guest agent and the named fixtures of
// sandbox/microvm/testdata into a temporary directory, and returns the
// agent's path and each fixture's, by name.
func Build(t testing.TB, fixtures ...string) (agent string, paths map[string]string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	agent, err := workloads.BuildAgent(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	paths = map[string]string{}
	for _, name := range fixtures {
		paths[name] = filepath.Join(dir, name)
		if err := workloads.BuildStatic(ctx, testmodules.RepoRoot(t), "./sandbox/microvm/testdata/"+name, paths[name]); err != nil {
			t.Fatal(err)
		}
	}
	return agent, paths
}
