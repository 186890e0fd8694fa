package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/daemon"
	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/tracing"
)

// A function limited to one instance and one queued request answers the
// request beyond that with 429 and Retry-After, while the others complete.
func TestBackPressure(t *testing.T) {
	h := start(t, t.TempDir())
	h.mustDeploy("slow", testmodules.Loop, api.FunctionSpec{TimeoutMs: 600, MaxInstances: 1, QueueSize: 1})
	type answer struct {
		status     int
		retryAfter string
	}
	answers := make(chan answer, 3)
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 100 * time.Millisecond) // arrive in order
			resp, err := http.Post(h.srv.URL+"/v1/functions/slow/invoke", "text/plain", nil)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			answers <- answer{resp.StatusCode, resp.Header.Get("Retry-After")}
		}(i)
	}
	wg.Wait()
	close(answers)
	counts := map[int]int{}
	for a := range answers {
		counts[a.status]++
		if a.status == 429 && a.retryAfter == "" {
			t.Error("429 without Retry-After")
		}
	}
	// Two ran (and timed out: the function loops); one was refused.
	if counts[504] != 2 || counts[429] != 1 {
		t.Fatalf("statuses %v, want two 504 and one 429", counts)
	}
}

func TestInvalidScheduling(t *testing.T) {
	h := start(t, t.TempDir())
	for _, spec := range []api.FunctionSpec{
		{KeepAlive: "forever"},
		{MinInstances: 3, MaxInstances: 1},
		{QueueSize: -1},
	} {
		_, err := h.deploy("f", testmodules.Hello, spec)
		if ce := apiError(t, err); ce.Status != 400 {
			t.Errorf("%+v: status %d, want 400", spec, ce.Status)
		}
	}
	f := h.mustDeploy("f", testmodules.Hello, api.FunctionSpec{KeepAlive: "hybrid", MinInstances: 1, MaxInstances: 4})
	if f.KeepAlive != "hybrid" || f.MinInstances != 1 {
		t.Fatalf("scheduling fields not kept: %+v", f)
	}
}

// Traces: an invocation with a traceparent header becomes a trace whose
// root continues the caller's trace, with one child span per phase, sent
// to a Zipkin collector stand-in.
func TestTracingEndToEnd(t *testing.T) {
	type span struct {
		TraceID  string `json:"traceId"`
		ID       string `json:"id"`
		ParentID string `json:"parentId"`
		Name     string `json:"name"`
	}
	var mu sync.Mutex
	var spans []span
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []span
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			t.Errorf("collector: %v", err)
		}
		mu.Lock()
		spans = append(spans, batch...)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer collector.Close()

	d, err := daemon.New(context.Background(), daemon.Config{DataDir: t.TempDir(),
		Tracing: tracing.Config{Exporter: "zipkin", Endpoint: collector.URL + "/api/v2/spans"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Server)
	h := &harness{t: t, d: d, srv: srv}
	h.c = newClient(srv.URL)
	h.mustDeploy("hello", testmodules.Hello, api.FunctionSpec{})
	req, _ := http.NewRequest("POST", srv.URL+"/v1/functions/hello/invoke", nil)
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("invoke: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	srv.Close()
	d.Close(context.Background()) // flushes the exporter

	mu.Lock()
	defer mu.Unlock()
	var root *span
	for i := range spans {
		if spans[i].Name == "invoke hello" {
			root = &spans[i]
		}
	}
	if root == nil || root.TraceID != traceID || root.ParentID != parentID {
		t.Fatalf("root span %+v does not continue the caller's trace; spans %+v", root, spans)
	}
	phases := map[string]bool{}
	for _, s := range spans {
		if s.ParentID == root.ID {
			phases[s.Name] = true
		}
	}
	for _, want := range []string{"queue", "instantiate", "startup", "run", "teardown"} {
		if !phases[want] {
			t.Errorf("no %s span under the root; got %v", want, phases)
		}
	}
}

func TestPoolMetrics(t *testing.T) {
	h := start(t, t.TempDir())
	h.mustDeploy("warm", testmodules.SnapReactor, api.FunctionSpec{MinInstances: 2, MemoryMB: 16})
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(h.srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), `kindling_instances{function="warm",state="idle"} 2`) {
			if !strings.Contains(string(b), `kindling_queue_depth{function="warm"} 0`) {
				t.Fatal("no queue depth metric")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("minInstances=2 never showed two idle instances:\n%s", grep(string(b), "kindling_instances"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
