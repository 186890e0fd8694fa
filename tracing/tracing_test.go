package tracing

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
)

// An incoming W3C trace context, sampled.
const (
	parentTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpanID  = "00f067aa0ba902b7"
	traceparent   = "00-" + parentTraceID + "-" + parentSpanID + "-01"
)

var phaseOrder = []string{"queue", "load", "compile", "instantiate", "startup", "run", "teardown"}

// testInvocation returns a finished invocation of fn whose phases sum to
// slightly less than its duration, as function.Invoke records them.
func testInvocation(fn string, failed bool) api.Invocation {
	start := time.Date(2026, 3, 14, 15, 9, 26, 535_897_000, time.UTC)
	phases := []phase.Timing{
		{Name: phase.QueueWait, Duration: 3 * time.Microsecond},
		{Name: phase.ArtifactLoad, Duration: 150 * time.Microsecond, Detail: "cache=memory"},
		{Name: phase.Compile, Duration: 2 * time.Millisecond, Detail: "cache=disk"},
		{Name: phase.Instantiate, Duration: 400 * time.Microsecond},
		{Name: phase.Startup, Duration: 120 * time.Microsecond},
		{Name: phase.Run, Duration: 5 * time.Millisecond},
		{Name: phase.Teardown, Duration: 30 * time.Microsecond},
	}
	d := phase.Total(phases) + 7*time.Microsecond
	inv := api.Invocation{
		ID:         "18c1f0a9b2-abcdef-1",
		Function:   fn,
		Status:     api.StatusSucceeded,
		Cold:       true,
		StartedAt:  start,
		EndedAt:    start.Add(d),
		DurationNs: d,
		Phases:     phases,
		HTTPStatus: http.StatusOK,
	}
	if failed {
		inv.Status = api.StatusFailed
		inv.ExitCode = 3
		inv.HTTPStatus = http.StatusBadGateway
		inv.Error = &api.ErrorInfo{Kind: "exit", Message: "exit code 3", ExitCode: 3}
	}
	return inv
}

func headerWith(tp string) http.Header {
	h := http.Header{}
	if tp != "" {
		h.Set("traceparent", tp)
	}
	return h
}

// newMemoryTracer returns an enabled Tracer exporting synchronously to exp.
func newMemoryTracer(exp sdktrace.SpanExporter) *Tracer {
	return newTracer("kindling-test", sdktrace.WithSyncer(exp))
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

func TestRecordInvocationSpans(t *testing.T) {
	clipped := testInvocation("clip", false)
	clipped.EndedAt = clipped.StartedAt.Add(time.Millisecond) // run and teardown end late
	unended := testInvocation("unended", false)
	unended.EndedAt = time.Time{}
	failedNoInfo := testInvocation("hello", false)
	failedNoInfo.Status = api.StatusFailed

	tests := []struct {
		name       string
		inv        api.Invocation
		header     http.Header
		wantStatus codes.Code
		wantAttrs  map[string]string
		wantEnd    time.Time
	}{
		{
			name:       "succeeded",
			inv:        testInvocation("hello", false),
			wantStatus: codes.Unset,
			wantAttrs: map[string]string{
				"kindling.function": "hello", "kindling.invocation_id": "18c1f0a9b2-abcdef-1",
				"kindling.cold_start": "true", "kindling.status": "succeeded", "kindling.exit_code": "0",
				"http.response.status_code": "200",
			},
		},
		{
			name:       "failed with remote parent",
			inv:        testInvocation("hello", true),
			header:     headerWith(traceparent),
			wantStatus: codes.Error,
			wantAttrs: map[string]string{
				"kindling.status": "failed", "kindling.exit_code": "3", "error.type": "exit",
				"http.response.status_code": "502",
			},
		},
		{
			name:       "failed without error info",
			inv:        failedNoInfo,
			wantStatus: codes.Error,
			wantAttrs:  map[string]string{"kindling.status": "failed"},
		},
		{
			name:    "phases clipped to the end",
			inv:     clipped,
			wantEnd: clipped.EndedAt,
		},
		{
			name:    "no end time",
			inv:     unended,
			wantEnd: unended.StartedAt.Add(unended.DurationNs),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp := tracetest.NewInMemoryExporter()
			tr := newMemoryTracer(exp)
			ctx := tr.Extract(context.Background(), tt.header)
			tr.RecordInvocation(ctx, tt.inv)
			// The syncer has exported every span; Shutdown would Reset exp.
			spans := exp.GetSpans()
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(spans) != 1+len(tt.inv.Phases) {
				t.Fatalf("got %d spans, want %d", len(spans), 1+len(tt.inv.Phases))
			}
			root := spans[len(spans)-1] // ended last
			if want := "invoke " + tt.inv.Function; root.Name != want {
				t.Fatalf("root span %q, want %q", root.Name, want)
			}
			if root.SpanKind != trace.SpanKindServer {
				t.Errorf("root kind %v, want server", root.SpanKind)
			}
			if tt.header != nil {
				if got := root.Parent.TraceID().String(); got != parentTraceID {
					t.Errorf("root trace id %s, want %s", got, parentTraceID)
				}
				if got := root.Parent.SpanID().String(); got != parentSpanID || !root.Parent.IsRemote() {
					t.Errorf("root parent %s (remote %v), want remote %s", got, root.Parent.IsRemote(), parentSpanID)
				}
			} else if root.Parent.IsValid() {
				t.Errorf("root has parent %v, want none", root.Parent)
			}
			if root.Status.Code != tt.wantStatus {
				t.Errorf("root status %v, want %v", root.Status.Code, tt.wantStatus)
			}
			if tt.inv.Error != nil && root.Status.Description != tt.inv.Error.Message {
				t.Errorf("root status message %q, want %q", root.Status.Description, tt.inv.Error.Message)
			}
			attrs := attrMap(root.Attributes)
			for k, v := range tt.wantAttrs {
				if attrs[k] != v {
					t.Errorf("root attribute %s = %q, want %q", k, attrs[k], v)
				}
			}
			if got := root.Resource.Set(); !strings.Contains(got.Encoded(attribute.DefaultEncoder()), "service.name=kindling-test") {
				t.Errorf("resource %v lacks service.name", got.Encoded(attribute.DefaultEncoder()))
			}
			wantEnd := tt.inv.EndedAt
			if !tt.wantEnd.IsZero() {
				wantEnd = tt.wantEnd
			}
			if !root.StartTime.Equal(tt.inv.StartedAt) || !root.EndTime.Equal(wantEnd) {
				t.Errorf("root %v..%v, want %v..%v", root.StartTime, root.EndTime, tt.inv.StartedAt, wantEnd)
			}

			cursor := tt.inv.StartedAt
			for i, p := range tt.inv.Phases {
				s := spans[i]
				if s.Name != string(p.Name) {
					t.Errorf("span %d is %q, want %q", i, s.Name, p.Name)
				}
				if s.Parent.SpanID() != root.SpanContext.SpanID() || s.SpanContext.TraceID() != root.SpanContext.TraceID() {
					t.Errorf("phase %s: parent %v, want root %v", p.Name, s.Parent, root.SpanContext)
				}
				wantEnd := cursor.Add(p.Duration)
				if wantEnd.After(root.EndTime) {
					wantEnd = root.EndTime
				}
				if !s.StartTime.Equal(cursor) || !s.EndTime.Equal(wantEnd) {
					t.Errorf("phase %s: %v..%v, want %v..%v", p.Name, s.StartTime, s.EndTime, cursor, wantEnd)
				}
				cursor = wantEnd
				if got := attrMap(s.Attributes)["kindling.phase.detail"]; got != p.Detail {
					t.Errorf("phase %s detail %q, want %q", p.Name, got, p.Detail)
				}
			}
		})
	}
}

// otlpCollector is a stand-in OTLP/HTTP collector that keeps the spans it
// receives.
type otlpCollector struct {
	mu       sync.Mutex
	requests []*collectorpb.ExportTraceServiceRequest
	errs     []string
}

func (c *otlpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, format string) {
		c.mu.Lock()
		c.errs = append(c.errs, format)
		c.mu.Unlock()
		http.Error(w, format, code)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		fail(http.StatusNotFound, r.Method+" "+r.URL.Path)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		fail(http.StatusUnsupportedMediaType, "content type "+ct)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	req := &collectorpb.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(body, req); err != nil {
		fail(http.StatusBadRequest, "decode: "+err.Error())
		return
	}
	c.mu.Lock()
	c.requests = append(c.requests, req)
	c.mu.Unlock()
	resp, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(resp)
}

// spans returns the received spans and the service.name of their resource.
func (c *otlpCollector) spans(t *testing.T) ([]*tracepb.Span, string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.errs {
		t.Errorf("collector: %s", e)
	}
	var spans []*tracepb.Span
	var service string
	for _, req := range c.requests {
		for _, rs := range req.GetResourceSpans() {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				spans = append(spans, ss.GetSpans()...)
			}
		}
	}
	return spans, service
}

func otlpAttrs(kvs []*commonpb.KeyValue) map[string]*commonpb.AnyValue {
	m := make(map[string]*commonpb.AnyValue, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = kv.GetValue()
	}
	return m
}

func TestOTLPExport(t *testing.T) {
	tests := []struct {
		name   string
		inv    api.Invocation
		header string // traceparent
	}{
		{name: "new trace", inv: testInvocation("hello", false)},
		{name: "remote parent", inv: testInvocation("hello", false), header: traceparent},
		{name: "failed", inv: testInvocation("crash", true), header: traceparent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := &otlpCollector{}
			srv := httptest.NewServer(col)
			defer srv.Close()

			ctx := context.Background()
			tr, err := New(ctx, Config{Exporter: "otlp", Endpoint: srv.URL, ServiceName: "kindling-otlp"})
			if err != nil {
				t.Fatal(err)
			}
			tr.RecordInvocation(tr.Extract(ctx, headerWith(tt.header)), tt.inv)
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := tr.Shutdown(sctx); err != nil {
				t.Fatal(err)
			}

			spans, service := col.spans(t)
			if service != "kindling-otlp" {
				t.Errorf("service.name %q, want kindling-otlp", service)
			}
			if len(spans) != 1+len(tt.inv.Phases) {
				t.Fatalf("got %d spans, want %d", len(spans), 1+len(tt.inv.Phases))
			}
			var root *tracepb.Span
			var phases []*tracepb.Span
			for _, s := range spans {
				if s.GetName() == "invoke "+tt.inv.Function {
					if root != nil {
						t.Fatal("two root spans")
					}
					root = s
				} else {
					phases = append(phases, s)
				}
			}
			if root == nil {
				t.Fatalf("no root span among %d spans", len(spans))
			}
			if root.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
				t.Errorf("root kind %v, want server", root.GetKind())
			}
			if tt.header != "" {
				if got := hex.EncodeToString(root.GetTraceId()); got != parentTraceID {
					t.Errorf("root trace id %s, want %s", got, parentTraceID)
				}
				if got := hex.EncodeToString(root.GetParentSpanId()); got != parentSpanID {
					t.Errorf("root parent span id %s, want %s", got, parentSpanID)
				}
			} else if len(root.GetParentSpanId()) != 0 {
				t.Errorf("root has parent span id %x, want none", root.GetParentSpanId())
			}
			if got, want := root.GetStartTimeUnixNano(), uint64(tt.inv.StartedAt.UnixNano()); got != want {
				t.Errorf("root start %d, want %d", got, want)
			}
			if got, want := root.GetEndTimeUnixNano(), uint64(tt.inv.EndedAt.UnixNano()); got != want {
				t.Errorf("root end %d, want %d", got, want)
			}
			attrs := otlpAttrs(root.GetAttributes())
			if got := attrs["kindling.function"].GetStringValue(); got != tt.inv.Function {
				t.Errorf("kindling.function %q, want %q", got, tt.inv.Function)
			}
			if got := attrs["kindling.invocation_id"].GetStringValue(); got != tt.inv.ID {
				t.Errorf("kindling.invocation_id %q, want %q", got, tt.inv.ID)
			}
			if got := attrs["kindling.cold_start"].GetBoolValue(); got != tt.inv.Cold {
				t.Errorf("kindling.cold_start %v, want %v", got, tt.inv.Cold)
			}
			if got := attrs["kindling.status"].GetStringValue(); got != tt.inv.Status {
				t.Errorf("kindling.status %q, want %q", got, tt.inv.Status)
			}
			if got := attrs["kindling.exit_code"].GetIntValue(); got != int64(tt.inv.ExitCode) {
				t.Errorf("kindling.exit_code %d, want %d", got, tt.inv.ExitCode)
			}
			if tt.inv.Error != nil {
				if root.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR || root.GetStatus().GetMessage() != tt.inv.Error.Message {
					t.Errorf("root status %v, want error %q", root.GetStatus(), tt.inv.Error.Message)
				}
				if got := attrs["error.type"].GetStringValue(); got != tt.inv.Error.Kind {
					t.Errorf("error.type %q, want %q", got, tt.inv.Error.Kind)
				}
			} else if root.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_UNSET {
				t.Errorf("root status %v, want unset", root.GetStatus())
			}

			slices.SortFunc(phases, func(a, b *tracepb.Span) int {
				return int(a.GetStartTimeUnixNano() - b.GetStartTimeUnixNano())
			})
			var names []string
			prevEnd := root.GetStartTimeUnixNano()
			for i, s := range phases {
				names = append(names, s.GetName())
				if !bytes.Equal(s.GetTraceId(), root.GetTraceId()) {
					t.Errorf("phase %s trace id %x, want %x", s.GetName(), s.GetTraceId(), root.GetTraceId())
				}
				if !bytes.Equal(s.GetParentSpanId(), root.GetSpanId()) {
					t.Errorf("phase %s parent %x, want root %x", s.GetName(), s.GetParentSpanId(), root.GetSpanId())
				}
				if s.GetStartTimeUnixNano() != prevEnd || s.GetEndTimeUnixNano() < s.GetStartTimeUnixNano() ||
					s.GetEndTimeUnixNano() > root.GetEndTimeUnixNano() {
					t.Errorf("phase %s spans %d..%d, want from %d within root ..%d",
						s.GetName(), s.GetStartTimeUnixNano(), s.GetEndTimeUnixNano(), prevEnd, root.GetEndTimeUnixNano())
				}
				if got, want := time.Duration(s.GetEndTimeUnixNano()-s.GetStartTimeUnixNano()), tt.inv.Phases[i].Duration; got != want {
					t.Errorf("phase %s lasts %v, want %v", s.GetName(), got, want)
				}
				prevEnd = s.GetEndTimeUnixNano()
				detail := otlpAttrs(s.GetAttributes())["kindling.phase.detail"].GetStringValue()
				if detail != tt.inv.Phases[i].Detail {
					t.Errorf("phase %s detail %q, want %q", s.GetName(), detail, tt.inv.Phases[i].Detail)
				}
			}
			if !slices.Equal(names, phaseOrder) {
				t.Errorf("phases %v, want %v", names, phaseOrder)
			}
		})
	}
}

// zipkinSpan is the part of a Zipkin v2 span the tests check.
type zipkinSpan struct {
	TraceID       string            `json:"traceId"`
	ID            string            `json:"id"`
	ParentID      string            `json:"parentId"`
	Name          string            `json:"name"`
	Kind          string            `json:"kind"`
	Timestamp     int64             `json:"timestamp"` // µs
	Duration      int64             `json:"duration"`  // µs
	Tags          map[string]string `json:"tags"`
	LocalEndpoint struct {
		ServiceName string `json:"serviceName"`
	} `json:"localEndpoint"`
}

func TestZipkinExport(t *testing.T) {
	tests := []struct {
		name   string
		header string
	}{
		{name: "new trace"},
		{name: "remote parent", header: traceparent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu    sync.Mutex
				spans []zipkinSpan
				errs  []string
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var batch []zipkinSpan
				err := json.NewDecoder(r.Body).Decode(&batch)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case r.Method != http.MethodPost || r.URL.Path != "/api/v2/spans":
					errs = append(errs, r.Method+" "+r.URL.Path)
				case err != nil:
					errs = append(errs, "decode: "+err.Error())
				default:
					spans = append(spans, batch...)
					w.WriteHeader(http.StatusAccepted)
					return
				}
				http.Error(w, "bad request", http.StatusBadRequest)
			}))
			defer srv.Close()

			ctx := context.Background()
			tr, err := New(ctx, Config{Exporter: "zipkin", Endpoint: srv.URL + "/api/v2/spans"})
			if err != nil {
				t.Fatal(err)
			}
			inv := testInvocation("hello", true)
			tr.RecordInvocation(tr.Extract(ctx, headerWith(tt.header)), inv)
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := tr.Shutdown(sctx); err != nil {
				t.Fatal(err)
			}

			mu.Lock()
			defer mu.Unlock()
			for _, e := range errs {
				t.Errorf("zipkin server: %s", e)
			}
			if len(spans) != 1+len(inv.Phases) {
				t.Fatalf("got %d spans, want %d", len(spans), 1+len(inv.Phases))
			}
			i := slices.IndexFunc(spans, func(s zipkinSpan) bool { return s.Name == "invoke hello" })
			if i < 0 {
				t.Fatalf("no root span in %+v", spans)
			}
			root := spans[i]
			if root.Kind != "SERVER" {
				t.Errorf("root kind %q, want SERVER", root.Kind)
			}
			if root.LocalEndpoint.ServiceName != DefaultServiceName {
				t.Errorf("service %q, want %q", root.LocalEndpoint.ServiceName, DefaultServiceName)
			}
			if root.Tags["kindling.invocation_id"] != inv.ID || root.Tags["error"] != inv.Error.Message {
				t.Errorf("root tags %v lack the invocation id or error", root.Tags)
			}
			if tt.header != "" {
				if root.TraceID != parentTraceID || root.ParentID != parentSpanID {
					t.Errorf("root trace %s parent %s, want %s %s", root.TraceID, root.ParentID, parentTraceID, parentSpanID)
				}
			} else if root.ParentID != "" {
				t.Errorf("root parent %s, want none", root.ParentID)
			}

			phases := slices.Delete(slices.Clone(spans), i, i+1)
			slices.SortStableFunc(phases, func(a, b zipkinSpan) int { return int(a.Timestamp - b.Timestamp) })
			var names []string
			for _, s := range phases {
				names = append(names, s.Name)
				if s.TraceID != root.TraceID || s.ParentID != root.ID {
					t.Errorf("phase %s: trace %s parent %s, want %s %s", s.Name, s.TraceID, s.ParentID, root.TraceID, root.ID)
				}
			}
			if !slices.Equal(names, phaseOrder) {
				t.Errorf("phases %v, want %v", names, phaseOrder)
			}
		})
	}
}

func TestStdoutExport(t *testing.T) {
	var buf bytes.Buffer
	ctx := context.Background()
	tr, err := New(ctx, Config{Exporter: "stdout", Writer: &buf})
	if err != nil {
		t.Fatal(err)
	}
	inv := testInvocation("hello", false)
	tr.RecordInvocation(ctx, inv)
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	type spanContext struct{ TraceID, SpanID string }
	var names []string
	var root spanContext
	parents := map[string]bool{}
	dec := json.NewDecoder(&buf)
	for {
		var s struct {
			Name        string
			SpanContext spanContext
			Parent      spanContext
		}
		if err := dec.Decode(&s); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("stdout output is not a JSON stream: %v", err)
		}
		if s.Name == "invoke hello" {
			root = s.SpanContext
			continue
		}
		names = append(names, s.Name)
		parents[s.Parent.TraceID+"/"+s.Parent.SpanID] = true
	}
	if !slices.Equal(names, phaseOrder) {
		t.Errorf("phase spans %v, want %v", names, phaseOrder)
	}
	if root.SpanID == "" {
		t.Fatal("no root span written")
	}
	if len(parents) != 1 || !parents[root.TraceID+"/"+root.SpanID] {
		t.Errorf("phase parents %v, want only the root %v", parents, root)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown exporter", Config{Exporter: "jaeger"}, `unknown exporter "jaeger" (valid: none, stdout, otlp, zipkin)`},
		{"otlp without scheme", Config{Exporter: "otlp", Endpoint: "127.0.0.1:4318"}, "otlp endpoint"},
		{"otlp not http", Config{Exporter: "otlp", Endpoint: "ftp://collector:4318"}, "otlp endpoint"},
		{"zipkin without host", Config{Exporter: "zipkin", Endpoint: "http:///api/v2/spans"}, "zipkin endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := New(context.Background(), tt.cfg)
			if err == nil {
				_ = tr.Shutdown(context.Background())
				t.Fatal("New succeeded, want an error")
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want invalid argument mentioning %q", err, tt.want)
			}
		})
	}
}

func TestNewExporters(t *testing.T) {
	tests := []struct {
		exporter string
		enabled  bool
	}{
		{"", false},
		{"none", false},
		{" NONE ", false},
		{"stdout", true},
		{"otlp", true},
		{"Zipkin", true},
	}
	for _, tt := range tests {
		t.Run(tt.exporter, func(t *testing.T) {
			tr, err := New(context.Background(), Config{Exporter: tt.exporter, Writer: io.Discard})
			if err != nil {
				t.Fatal(err)
			}
			if tr.Enabled() != tt.enabled {
				t.Errorf("Enabled() = %v, want %v", tr.Enabled(), tt.enabled)
			}
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		})
	}
}

func TestOTLPTracesURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "http://127.0.0.1:4318/v1/traces"},
		{"http://collector:4318", "http://collector:4318/v1/traces"},
		{"https://collector:4318/", "https://collector:4318/v1/traces"},
		{"http://gateway/otel", "http://gateway/otel/v1/traces"},
		{"http://collector:4318/v1/traces", "http://collector:4318/v1/traces"},
	}
	for _, tt := range tests {
		got, err := otlpTracesURL(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("otlpTracesURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestDisabled(t *testing.T) {
	none, err := New(context.Background(), Config{Exporter: "none"})
	if err != nil {
		t.Fatal(err)
	}
	for name, tr := range map[string]*Tracer{"nil": nil, "none": none} {
		t.Run(name, func(t *testing.T) {
			if tr.Enabled() {
				t.Error("Enabled() = true")
			}
			ctx := context.Background()
			if got := tr.Extract(ctx, headerWith(traceparent)); got != ctx {
				t.Error("Extract changed the context")
			}
			inv := testInvocation("hello", true)
			if allocs := testing.AllocsPerRun(100, func() { tr.RecordInvocation(ctx, inv) }); allocs != 0 {
				t.Errorf("RecordInvocation allocates %v times, want 0", allocs)
			}
			if err := tr.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		})
	}
}

func TestRecordAfterShutdown(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr := newMemoryTracer(exp)
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	tr.RecordInvocation(context.Background(), testInvocation("hello", false))
	if n := len(exp.GetSpans()); n != 0 {
		t.Errorf("%d spans exported after Shutdown", n)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func BenchmarkRecordInvocation(b *testing.B) {
	ctx := context.Background()
	inv := testInvocation("hello", false)

	b.Run("disabled", func(b *testing.B) {
		tr, err := New(ctx, Config{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			tr.RecordInvocation(ctx, inv)
		}
	})
	// Spans are built and handed to an exporter that drops them, so the
	// numbers are the cost of RecordInvocation and the SDK, not of an export.
	for _, bc := range []struct {
		name      string
		processor sdktrace.TracerProviderOption
	}{
		{"enabled", sdktrace.WithSyncer(tracetest.NewNoopExporter())},
		// As for otlp and zipkin: queued, exported in the background.
		{"enabled_batched", sdktrace.WithBatcher(tracetest.NewNoopExporter())},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tr := newTracer("kindling-bench", bc.processor)
			defer func() { _ = tr.Shutdown(ctx) }()
			b.ReportAllocs()
			for b.Loop() {
				tr.RecordInvocation(ctx, inv)
			}
		})
	}
}
