package server_test

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/daemon"
	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/sandbox/microvm"
)

// A static Linux binary uploaded as an artifact deploys as a microvm
// function (its template booted at deploy) and answers from a clone.
func TestMicroVMFunctionOverHTTP(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("needs qemu-system-x86_64 (Debian package qemu-system-x86)")
	}
	if kernels, _ := filepath.Glob("/boot/vmlinuz-*"); len(kernels) == 0 {
		t.Skip("needs a guest kernel in /boot/vmlinuz-* (Debian package linux-image-amd64)")
	}
	ctx := context.Background()
	dir := t.TempDir()
	agent, err := microvm.BuildAgent(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	fn := filepath.Join(dir, "hello")
	if err := microvm.GoBuildStatic(ctx, testmodules.RepoRoot(t), "./sandbox/microvm/testdata/hello", fn); err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(ctx, daemon.Config{DataDir: t.TempDir(), OCIRuntime: "none", MicroVM: true, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Server)
	h := &harness{t: t, d: d, srv: srv, c: newClient(srv.URL)}
	t.Cleanup(h.stop)
	bin, err := os.ReadFile(fn)
	if err != nil {
		t.Fatal(err)
	}
	h.mustDeploy("hello-vm", bin, api.FunctionSpec{Runtime: "microvm", MemoryMB: 128, TimeoutMs: 60_000})
	res, err := h.c.Invoke(ctx, "hello-vm", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Body) != "hello, world\n" {
		t.Fatalf("microvm function answered %q", res.Body)
	}
}
