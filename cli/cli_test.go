package cli

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindling-dev/kindling/daemon"
	"github.com/kindling-dev/kindling/internal/testmodules"
)

// run executes the CLI in process and returns its exit code and output.
func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeModule(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// serveDaemon runs a daemon for the test and points KINDLING_URL at it.
func serveDaemon(t *testing.T) {
	t.Helper()
	d, err := daemon.New(context.Background(), daemon.Config{DataDir: t.TempDir(), OCIRuntime: "none"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Server)
	t.Cleanup(func() { srv.Close(); d.Close(context.Background()) })
	t.Setenv("KINDLING_URL", srv.URL)
}

func TestClientCommands(t *testing.T) {
	serveDaemon(t)
	dir := t.TempDir()
	hello := writeModule(t, dir, "hello.wasm", testmodules.Hello)
	writeModule(t, dir, "echo.wasm", testmodules.Echo)
	writeModule(t, dir, "exit.wasm", testmodules.Exit)
	manifest := filepath.Join(dir, "kindling.yaml")
	os.WriteFile(manifest, []byte("functions:\n  - name: echo\n    wasm: echo.wasm\n    memory: 16\n  - name: exit\n    wasm: exit.wasm\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "body.txt"), []byte("from a file"), 0o644)

	steps := []struct {
		name       string
		stdin      string
		args       []string
		code       int
		out, errOu string
	}{
		{"deploy", "", []string{"deploy", "hello", "--wasm", hello, "--memory", "32", "--timeout", "5s", "--env", "A=1", "--keep-alive", "hybrid", "--max-instances", "4"}, 0, "deployed hello (version 1", ""},
		{"deploy bad policy", "", []string{"deploy", "bad", "--wasm", hello, "--keep-alive", "sometimes"}, 1, "", "keepAlive"},
		{"deploy manifest", "", []string{"deploy", "-f", manifest}, 0, "deployed exit (version 1", ""},
		{"ls", "", []string{"ls"}, 0, "hello  wasm     32MiB   5s", ""},
		{"invoke", "", []string{"invoke", "hello"}, 0, "hello, world\n", ""},
		{"invoke literal", "", []string{"invoke", "echo", "-d", "literal"}, 0, "literal", ""},
		{"invoke file", "", []string{"invoke", "echo", "--data", "@" + filepath.Join(dir, "body.txt")}, 0, "from a file", ""},
		{"invoke stdin verbose", "piped", []string{"invoke", "echo", "-d", "-", "-v"}, 0, "piped", "instantiate"},
		{"invoke failing", "", []string{"invoke", "exit"}, 1, "", "bad request"},
		{"logs", "", []string{"logs", "exit"}, 0, "bad request", ""},
		{"logs tail", "", []string{"logs", "exit", "--tail", "1", "--since", "1h"}, 0, "bad request", ""},
		{"unknown function", "", []string{"invoke", "nope"}, 1, "", `kindling: not_found: function "nope": not found`},
		{"bad deploy", "", []string{"deploy", "bad", "--wasm", hello, "--memory", "-4"}, 1, "", "memoryMB"},
		{"missing wasm flag", "", []string{"deploy", "x"}, 1, "", "one of --wasm FILE or --image NAME:TAG is required"},
		{"invoke async", "", []string{"invoke", "echo", "-d", "later", "--async"}, 0, "", "accepted; result: kindling invocation"},
		{"logs needs a name", "", []string{"logs"}, 1, "", "usage: kindling logs NAME"},
		{"rm", "", []string{"rm", "hello"}, 0, "deleted hello", ""},
		{"rm again", "", []string{"rm", "hello"}, 1, "", "not found"},
	}
	for _, s := range steps {
		code, out, errOut := run(t, s.stdin, s.args...)
		if code != s.code || !strings.Contains(out, s.out) || !strings.Contains(errOut, s.errOu) {
			t.Errorf("%s: kindling %s\n exit %d (want %d)\n stdout %q (want %q)\n stderr %q (want %q)",
				s.name, strings.Join(s.args, " "), code, s.code, out, s.out, errOut, s.errOu)
		}
	}
}

func TestUnreachableDaemon(t *testing.T) {
	code, _, errOut := run(t, "", "ls", "--server", "http://127.0.0.1:1")
	if code != 1 || !strings.Contains(errOut, "cannot reach kindling") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q: want one clear line", code, errOut)
	}
}

func TestRunOneShot(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir := t.TempDir()
	tests := []struct {
		name     string
		module   []byte
		stdin    string
		args     []string
		code     int
		out, err string
	}{
		{"echo", testmodules.Echo, "one shot", nil, 0, "one shot", ""},
		{"exit code passes through", testmodules.Exit, "", nil, 3, "", "bad request"},
		{"trap", testmodules.Trap, "", nil, 1, "", "trap"},
		{"timeout", testmodules.Loop, "", []string{"--timeout", "100ms"}, 1, "", "timeout"},
		{"not wasm", testmodules.Garbage, "", nil, 1, "", "not a valid WebAssembly module"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeModule(t, dir, tc.name+".wasm", tc.module)
			code, out, errOut := run(t, tc.stdin, append([]string{"run", p}, tc.args...)...)
			if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.err) {
				t.Fatalf("exit %d stdout %q stderr %q; want %d %q %q", code, out, errOut, tc.code, tc.out, tc.err)
			}
		})
	}
	if code, _, errOut := run(t, "", "run", filepath.Join(dir, "missing.wasm")); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("missing file: %d %q", code, errOut)
	}
}

func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the Go toolchain; skipped with -short")
	}
	out := filepath.Join(t.TempDir(), "hello.wasm")
	code, stdout, stderr := run(t, "", "build", "../examples/hello-go", "-o", out)
	if code != 0 || !strings.Contains(stdout, "reactor (snapshot-ready)") {
		t.Fatalf("build: exit %d\n%s%s", code, stdout, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil || !bytes.Contains(b, []byte("kindling_handle")) || !bytes.Contains(b, []byte("_initialize")) {
		t.Fatalf("built module lacks the reactor exports (%v)", err)
	}
	if code, _, stderr := run(t, "", "build", "./no/such/package"); code != 1 || !strings.Contains(stderr, "go build") {
		t.Fatalf("bad package: exit %d %q", code, stderr)
	}
}

func TestAsyncCommands(t *testing.T) {
	serveDaemon(t)
	p := writeModule(t, t.TempDir(), "exit.wasm", testmodules.Exit)
	if code, _, errOut := run(t, "", "deploy", "exit", "--wasm", p); code != 0 {
		t.Fatal(errOut)
	}
	code, out, errOut := run(t, "", "invoke", "exit", "--async")
	id := strings.TrimSpace(out)
	if code != 0 || id == "" {
		t.Fatalf("invoke --async: %d %q %q", code, out, errOut)
	}
	code, out, _ = run(t, "", "invocation", id, "--wait")
	if code != 0 || !strings.Contains(out, `"status": "failed"`) || !strings.Contains(out, `"kind": "exit"`) {
		t.Fatalf("invocation --wait: %d %s", code, out)
	}
	code, out, _ = run(t, "", "logs", "--invocation", id, "--follow")
	if code != 0 || out != "bad request\n" {
		t.Fatalf("logs --invocation: %d %q", code, out)
	}
}
