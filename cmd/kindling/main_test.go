package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/client"
	"github.com/kindling-dev/kindling/internal/testmodules"
)

func buildKindling(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kindling")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serve starts `kindling serve` and waits until it answers /healthz.
func serve(t *testing.T, bin, dataDir, addr string, extra ...string) (*exec.Cmd, *client.Client) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--data-dir", dataDir, "--listen", addr}, extra...)...)
	logf, _ := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := client.New("http://" + addr)
	deadline := time.Now().Add(20 * time.Second)
	for c.Healthy(context.Background()) != nil {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("daemon did not come up:\n%s", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cmd, c
}

// TestServeKillRestart runs the real binary: deploy from a manifest at
// start, invoke, SIGKILL the daemon, restart it on the same data
// directory, and find every function still deployed and invocable.
func TestServeKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the kindling binary; skipped with -short")
	}
	bin := buildKindling(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "echo.wasm"), testmodules.Echo, 0o644)
	os.WriteFile(filepath.Join(dir, "hello.wasm"), testmodules.Hello, 0o644)
	manifest := filepath.Join(dir, "kindling.yaml")
	os.WriteFile(manifest, []byte("functions:\n  - {name: echo, wasm: echo.wasm}\n  - {name: hello, wasm: hello.wasm, memory: 16}\n"), 0o644)
	data := filepath.Join(dir, "data")
	addr := freeAddr(t)

	cmd, c := serve(t, bin, data, addr, "--deploy", manifest)
	ctx := context.Background()
	res, err := c.Invoke(ctx, "echo", strings.NewReader("before the crash"))
	if err != nil || string(res.Body) != "before the crash" {
		t.Fatalf("invoke: %v", err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	_, c = serve(t, bin, data, addr)
	fns, err := c.List(ctx)
	if err != nil || len(fns) != 2 {
		t.Fatalf("after kill and restart: %d functions, %v", len(fns), err)
	}
	for _, name := range []string{"echo", "hello"} {
		res, err := c.Invoke(ctx, name, strings.NewReader("x"))
		if err != nil {
			t.Fatalf("%s after restart: %v", name, err)
		}
		if res.Status != 200 {
			t.Fatalf("%s after restart: %d", name, res.Status)
		}
	}
}

// TestServeGracefulStop checks that SIGTERM drains and exits 0.
func TestServeGracefulStop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the kindling binary; skipped with -short")
	}
	bin := buildKindling(t)
	cmd, _ := serve(t, bin, t.TempDir(), freeAddr(t))
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop on SIGTERM")
	}

}

// TestAsyncSurvivesKill: an invocation accepted with 202 runs even if the
// daemon is SIGKILLed right after accepting it.
func TestAsyncSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the kindling binary; skipped with -short")
	}
	bin := buildKindling(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "sleeper.wasm"), testmodules.BuildGo(t, "internal/testmodules/sleeper"), 0o644)
	manifest := filepath.Join(dir, "kindling.yaml")
	os.WriteFile(manifest, []byte("functions:\n  - {name: sleeper, wasm: sleeper.wasm, memory: 64}\n"), 0o644)
	data, addr := filepath.Join(dir, "data"), freeAddr(t)
	cmd, c := serve(t, bin, data, addr, "--deploy", manifest)
	ctx := context.Background()
	inv, err := c.InvokeAsync(ctx, "sleeper", strings.NewReader("1s"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGKILL) // well before the function can finish
	cmd.Wait()

	_, c = serve(t, bin, data, addr)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := c.Invocation(ctx, inv.ID)
		if err != nil {
			t.Fatalf("accepted invocation lost across the crash: %v", err)
		}
		if got.Status == api.StatusSucceeded {
			if got.Response == nil || string(got.Response.Body) != "slept 1s" || got.Attempts < 1 {
				t.Fatalf("result %+v", got)
			}
			return
		}
		if got.Status == api.StatusFailed || time.Now().After(deadline) {
			t.Fatalf("invocation after restart: %+v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
