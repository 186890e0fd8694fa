package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/client"
	"github.com/kindling-dev/kindling/daemon"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/phase"
)

// harness is a real daemon (store, wasm sandbox, API) behind a loopback
// HTTP server.
type harness struct {
	t   testing.TB
	dir string
	d   *daemon.Daemon
	srv *httptest.Server
	c   *client.Client
}

func start(t testing.TB, dir string) *harness {
	t.Helper()
	d, err := daemon.New(context.Background(), daemon.Config{DataDir: dir, MaxBodyBytes: 1 << 20, OCIRuntime: "none"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Server)
	h := &harness{t: t, dir: dir, d: d, srv: srv, c: client.New(srv.URL)}
	t.Cleanup(h.stop)
	return h
}

func newClient(url string) *client.Client { return client.New(url) }

func (h *harness) stop() {
	if h.srv == nil {
		return
	}
	h.srv.Close()
	h.d.Close(context.Background())
	h.srv = nil
}

func (h *harness) deploy(name string, module []byte, spec api.FunctionSpec) (api.Function, error) {
	h.t.Helper()
	ref, err := h.c.UploadArtifact(context.Background(), bytes.NewReader(module))
	if err != nil {
		h.t.Fatal(err)
	}
	spec.Artifact = ref.Digest
	return h.c.Deploy(context.Background(), name, spec)
}

func (h *harness) mustDeploy(name string, module []byte, spec api.FunctionSpec) api.Function {
	h.t.Helper()
	f, err := h.deploy(name, module, spec)
	if err != nil {
		h.t.Fatalf("deploy %s: %v", name, err)
	}
	return f
}

func apiError(t *testing.T, err error) *client.Error {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not an API error", err)
	}
	return ce
}

func TestDeployInvokeLifecycle(t *testing.T) {
	h := start(t, t.TempDir())
	ctx := context.Background()
	f := h.mustDeploy("hello", testmodules.Hello, api.FunctionSpec{})
	if f.Runtime != "wasm" || f.MemoryMB != api.DefaultMemoryMB || f.TimeoutMs != api.DefaultTimeoutMs || f.Version != 1 {
		t.Fatalf("defaults not applied: %+v", f)
	}
	res, err := h.c.Invoke(ctx, "hello", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Body) != "hello, world\n" || res.Status != 200 {
		t.Fatalf("invoke = %d %q", res.Status, res.Body)
	}
	if res.InvocationID == "" || !res.Cold {
		t.Errorf("headers: id %q cold %v", res.InvocationID, res.Cold)
	}
	for _, want := range []phase.Name{phase.QueueWait, phase.Instantiate, phase.Startup, phase.Run, phase.Teardown} {
		if !hasPhase(res.Phases, want) {
			t.Errorf("Server-Timing lacks %s: %q", want, res.Header.Get("Server-Timing"))
		}
	}
	inv, err := h.c.Invocation(ctx, res.InvocationID)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Status != api.StatusSucceeded || inv.Function != "hello" || len(inv.Phases) == 0 {
		t.Fatalf("invocation record: %+v", inv)
	}
	fns, err := h.c.List(ctx)
	if err != nil || len(fns) != 1 || fns[0].Name != "hello" {
		t.Fatalf("list = %+v, %v", fns, err)
	}
	// Redeploy bumps the version; delete removes it.
	if f2 := h.mustDeploy("hello", testmodules.Echo, api.FunctionSpec{}); f2.Version != 2 {
		t.Fatalf("redeploy version = %d", f2.Version)
	}
	res, err = h.c.Invoke(ctx, "hello", strings.NewReader("now echo"))
	if err != nil || string(res.Body) != "now echo" {
		t.Fatalf("after redeploy: %q, %v", res.Body, err)
	}
	if err := h.c.Delete(ctx, "hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.Get(ctx, "hello"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get after delete = %v", err)
	}
}

func hasPhase(ts []phase.Timing, n phase.Name) bool {
	for _, t := range ts {
		if t.Name == n {
			return true
		}
	}
	return false
}

func TestDeploy_Errors(t *testing.T) {
	h := start(t, t.TempDir())
	ctx := context.Background()
	ref, err := h.c.UploadArtifact(ctx, bytes.NewReader(testmodules.Hello))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		fn     string
		spec   api.FunctionSpec
		module []byte
		want   string
	}{
		{"not wasm", "bad", api.FunctionSpec{}, testmodules.Garbage, "not a valid WebAssembly module"},
		{"no _start", "bad", api.FunctionSpec{}, testmodules.Reactor, "_start"},
		{"bad name", "Bad/Name", api.FunctionSpec{Artifact: ref.Digest}, nil, "name"},
		{"unknown runtime", "f", api.FunctionSpec{Runtime: "jvm", Artifact: ref.Digest}, nil, `runtime: unknown runtime "jvm"`},
		{"memory", "f", api.FunctionSpec{Artifact: ref.Digest, MemoryMB: -1}, nil, "memoryMB"},
		{"timeout", "f", api.FunctionSpec{Artifact: ref.Digest, TimeoutMs: -5}, nil, "timeoutMs"},
		{"env key", "f", api.FunctionSpec{Artifact: ref.Digest, Env: map[string]string{"A=B": "c"}}, nil, "env"},
		{"missing artifact", "f", api.FunctionSpec{Artifact: "sha256:" + strings.Repeat("0", 64)}, nil, "has not been uploaded"},
		{"not a digest", "f", api.FunctionSpec{Artifact: "hello.wasm"}, nil, "artifact"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.module != nil {
				_, err = h.deploy(tc.fn, tc.module, tc.spec)
			} else {
				_, err = h.c.Deploy(ctx, tc.fn, tc.spec)
			}
			ce := apiError(t, err)
			if ce.Status != 400 || ce.Info.Kind != "invalid_argument" || !strings.Contains(ce.Info.Message, tc.want) {
				t.Fatalf("got %d %+v, want 400 invalid_argument mentioning %q", ce.Status, ce.Info, tc.want)
			}
			if _, err := h.c.Get(ctx, tc.fn); !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("a rejected deploy stored the function: %v", err)
			}
		})
	}
	// The rejected modules' artifacts were not kept.
	for _, m := range [][]byte{testmodules.Garbage, testmodules.Reactor} {
		ref, _ := h.d.Store.PutArtifactBytes(m) // compute the digest
		h.d.Store.DeleteArtifact(ref.Digest)
		if h.d.Store.HasArtifact(ref.Digest) {
			t.Fatal("artifact still stored")
		}
	}
	// Unknown JSON fields are rejected too.
	resp, err := http.DefaultClient.Do(mustReq(t, "PUT", h.srv.URL+"/v1/functions/x", `{"runtime":"wasm","memroyMB":5}`))
	if err != nil {
		t.Fatal(err)
	}
	checkErrorBody(t, resp, 400, "invalid_argument")
}

func mustReq(t *testing.T, method, url, body string) *http.Request {
	r, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func checkErrorBody(t *testing.T, resp *http.Response, status int, kind string) api.ErrorInfo {
	t.Helper()
	defer resp.Body.Close()
	var eb api.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
		t.Fatalf("error body is not JSON: %v", err)
	}
	if resp.StatusCode != status || eb.Error.Kind != kind || eb.Error.Message == "" {
		t.Fatalf("got %d %+v, want %d kind %s", resp.StatusCode, eb.Error, status, kind)
	}
	return eb.Error
}

func TestInvoke_BadInput(t *testing.T) {
	h := start(t, t.TempDir())
	ctx := context.Background()
	h.mustDeploy("hello", testmodules.Hello, api.FunctionSpec{})
	h.mustDeploy("trap", testmodules.Trap, api.FunctionSpec{})
	h.mustDeploy("exit", testmodules.Exit, api.FunctionSpec{})
	h.mustDeploy("loop", testmodules.Loop, api.FunctionSpec{TimeoutMs: 300})
	h.mustDeploy("oom", testmodules.OOM, api.FunctionSpec{MemoryMB: 16})
	h.mustDeploy("echo", testmodules.Echo, api.FunctionSpec{})
	baseline := runtime.NumGoroutine()

	tests := []struct {
		name     string
		fn       string
		body     string
		status   int
		kind     string
		contains string
		exitCode int
		stderr   string
	}{
		{"unknown function", "nope", "", 404, "not_found", `"nope"`, 0, ""},
		{"oversize body", "echo", strings.Repeat("x", 1<<20+1), 413, "too_large", "limit", 0, ""},
		{"trap", "trap", "", 500, "trap", "unreachable", 0, ""},
		{"non-zero exit", "exit", "", 500, "exit", "code 3", 3, "bad request\n"},
		{"timeout", "loop", "", 504, "timeout", "deadline", 0, ""},
		{"memory limit", "oom", "", 500, "oom", "16 MiB", 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(h.srv.URL+"/v1/functions/"+tc.fn+"/invoke", "text/plain", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			info := checkErrorBody(t, resp, tc.status, tc.kind)
			if !strings.Contains(info.Message, tc.contains) {
				t.Errorf("message %q lacks %q", info.Message, tc.contains)
			}
			if info.ExitCode != tc.exitCode || info.StderrTail != tc.stderr {
				t.Errorf("exit code %d stderr %q, want %d %q", info.ExitCode, info.StderrTail, tc.exitCode, tc.stderr)
			}
			if tc.status >= 500 {
				if info.InvocationID == "" {
					t.Fatal("no invocation id in a function failure")
				}
				inv, err := h.c.Invocation(ctx, info.InvocationID)
				if err != nil || inv.Status != api.StatusFailed || inv.Error == nil || inv.Error.Kind != tc.kind {
					t.Errorf("invocation record %+v, %v", inv, err)
				}
			}
		})
	}
	// The daemon still serves, and the stopped guests left nothing running.
	if res, err := h.c.Invoke(ctx, "hello", nil); err != nil || string(res.Body) != "hello, world\n" {
		t.Fatalf("after failures: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+2 {
		t.Errorf("goroutines: %d after failures, %d before: a guest may still be running", n, baseline)
	}
}

// A function stuck in a loop does not hold up other functions.
func TestInvoke_ConcurrentWithStuckFunction(t *testing.T) {
	h := start(t, t.TempDir())
	ctx := context.Background()
	h.mustDeploy("loop", testmodules.Loop, api.FunctionSpec{TimeoutMs: 2000})
	h.mustDeploy("echo", testmodules.Echo, api.FunctionSpec{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.c.Invoke(ctx, "loop", nil)
	}()
	var ok int
	for i := 0; i < 50; i++ {
		res, err := h.c.Invoke(ctx, "echo", strings.NewReader("ping"))
		if err == nil && string(res.Body) == "ping" {
			ok++
		}
	}
	wg.Wait()
	if ok != 50 {
		t.Fatalf("%d of 50 echo invocations succeeded while another function looped", ok)
	}
}

func TestInvoke_Concurrent(t *testing.T) {
	h := start(t, t.TempDir())
	ctx := context.Background()
	h.mustDeploy("echo", testmodules.Echo, api.FunctionSpec{})
	h.mustDeploy("counter", testmodules.Counter, api.FunctionSpec{})
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				body := strings.Repeat(string(rune('a'+w)), 100+i)
				res, err := h.c.Invoke(ctx, "echo", strings.NewReader(body))
				if err != nil || string(res.Body) != body {
					errs <- errors.New("echo mismatch")
				}
				res, err = h.c.Invoke(ctx, "counter", nil)
				if err != nil || string(res.Body) != "11" {
					errs <- errors.New("counter state leaked between invocations")
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRestartKeepsFunctionsAndCompileCache(t *testing.T) {
	dir := t.TempDir()
	h := start(t, dir)
	h.mustDeploy("hello", testmodules.Hello, api.FunctionSpec{MemoryMB: 32, Env: map[string]string{"A": "1"}})
	res, err := h.c.Invoke(context.Background(), "hello", nil)
	if err != nil {
		t.Fatal(err)
	}
	id := res.InvocationID
	h.stop()

	h = start(t, dir)
	f, err := h.c.Get(context.Background(), "hello")
	if err != nil || f.MemoryMB != 32 || f.Env["A"] != "1" {
		t.Fatalf("after restart: %+v, %v", f, err)
	}
	if _, err := h.c.Invocation(context.Background(), id); err != nil {
		t.Fatalf("invocation record lost across restart: %v", err)
	}
	res, err = h.c.Invoke(context.Background(), "hello", nil)
	if err != nil {
		t.Fatal(err)
	}
	var compile *phase.Timing
	for i := range res.Phases {
		if res.Phases[i].Name == phase.Compile {
			compile = &res.Phases[i]
		}
	}
	if compile == nil || compile.Detail != "cache=disk" {
		t.Fatalf("first invoke after restart: compile phase %+v, want cache=disk (phases %+v)", compile, res.Phases)
	}
}

func TestTrigger_CGI(t *testing.T) {
	h := start(t, t.TempDir())
	// The function's own env reaches the guest; request variables win.
	h.mustDeploy("cgi", testmodules.BuildGo(t, "examples/cgi-go"), api.FunctionSpec{MemoryMB: 64,
		Env: map[string]string{"HTTP_X_FROM_SPEC": "spec", "HTTP_X_TRACE": "overridden"}})
	req := mustReq(t, "POST", h.srv.URL+"/fn/cgi/orders/42?verbose=1", "payload")
	req.Header.Set("X-Trace", "t-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("X-Powered-By") != "kindling" {
		t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	var got struct {
		Method, Path, Query, Body string
		Headers                   map[string]string
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Method != "POST" || got.Path != "/orders/42" || got.Query != "verbose=1" || got.Body != "payload" || got.Headers["HTTP_X_TRACE"] != "t-1" || got.Headers["HTTP_X_FROM_SPEC"] != "spec" {
		t.Fatalf("function saw %+v", got)
	}
	// Its stderr went to the function's logs.
	var logs bytes.Buffer
	if err := h.c.Logs(context.Background(), "cgi", client.LogOptions{}, &logs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "cgi-go: POST /orders/42 (7 bytes)") {
		t.Fatalf("logs = %q", logs.String())
	}
}

func TestHealthAndMetrics(t *testing.T) {
	h := start(t, t.TempDir())
	h.mustDeploy("hello", testmodules.Hello, api.FunctionSpec{})
	h.mustDeploy("trap", testmodules.Trap, api.FunctionSpec{})
	h.c.Invoke(context.Background(), "hello", nil)
	h.c.Invoke(context.Background(), "trap", nil)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(h.srv.URL + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, resp.Status, err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get(h.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`kindling_invocations_total{cold="true",function="hello",outcome="success"} 1`,
		`kindling_invocations_total{cold="true",function="trap",outcome="trap"} 1`,
		`kindling_phase_duration_seconds_bucket{phase="instantiate",runtime="wasm"`,
		`kindling_compile_cache_total{result="miss"} 2`,
		`kindling_functions 2`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	h.d.Server.SetReady(false)
	resp, _ = http.Get(h.srv.URL + "/readyz")
	checkErrorBody(t, resp, 503, "unavailable")
}

func TestUnknownRoute(t *testing.T) {
	h := start(t, t.TempDir())
	resp, err := http.Get(h.srv.URL + "/v2/nothing")
	if err != nil {
		t.Fatal(err)
	}
	checkErrorBody(t, resp, 404, "not_found")
}

// An SDK function built as a reactor deploys as a snapshot and serves
// from it over HTTP; after the first request, instances come warm from the
// pool, each reset to the snapshot.
func TestSnapshotFunctionOverHTTP(t *testing.T) {
	h := start(t, t.TempDir())
	ctx := context.Background()
	f := h.mustDeploy("hello", testmodules.BuildGoReactor(t, "examples/hello-go"), api.FunctionSpec{MemoryMB: 64, Env: map[string]string{"GREETING": "Hi"}})
	if f.StartMode != api.StartSnapshot || f.StartModeReason != "" {
		t.Fatalf("start mode %q (%s), want snapshot", f.StartMode, f.StartModeReason)
	}
	var colds []bool
	for i := 0; i < 5; i++ {
		res, err := h.c.Invoke(ctx, "hello", strings.NewReader(fmt.Sprint("caller", i)))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("Hi, caller%d! (from Go on kindling)\n", i); string(res.Body) != want {
			t.Fatalf("invoke %d: %q, want %q", i, res.Body, want)
		}
		colds = append(colds, res.Cold)
	}
	if !colds[0] || colds[4] {
		t.Errorf("cold starts %v: want the first cold and later ones warm", colds)
	}
	// A command module says why it does not start from a snapshot.
	g := h.mustDeploy("echo", testmodules.Echo, api.FunctionSpec{})
	if g.StartMode != api.StartCommand || !strings.Contains(g.StartModeReason, "reactor") {
		t.Fatalf("command module: %q (%s)", g.StartMode, g.StartModeReason)
	}
}
