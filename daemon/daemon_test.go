package daemon_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/daemon"
	"github.com/kindling-dev/kindling/function"
	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/tracing"
)

func newDaemon(tb testing.TB, cfg daemon.Config) *daemon.Daemon {
	tb.Helper()
	cfg.DataDir = tb.TempDir()
	d, err := daemon.New(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close(context.Background()) })
	ref, err := d.Store.PutArtifactBytes(testmodules.Echo)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := d.Functions.Deploy(context.Background(), "echo", api.FunctionSpec{Artifact: ref.Digest, MemoryMB: 16}); err != nil {
		tb.Fatal(err)
	}
	return d
}

func TestNew_BadConfig(t *testing.T) {
	for _, cfg := range []daemon.Config{
		{KeepAlive: "sometimes"},
		{Tracing: tracing.Config{Exporter: "carrier-pigeon"}},
	} {
		cfg.DataDir = t.TempDir()
		if d, err := daemon.New(context.Background(), cfg); err == nil {
			d.Close(context.Background())
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// BenchmarkInvokeTracing is the tiny module's in-process invocation
// (scheduler, fresh instance, records, metrics) with tracing off and on
// (Zipkin exporter to a local sink), side by side.
func BenchmarkInvokeTracing(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	for _, tc := range []struct {
		name string
		cfg  tracing.Config
	}{
		{"off", tracing.Config{}},
		{"on", tracing.Config{Exporter: "zipkin", Endpoint: sink.URL}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			d := newDaemon(b, daemon.Config{Tracing: tc.cfg})
			body := []byte("kindling")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := d.Functions.Invoke(context.Background(), "echo", function.Request{Body: body})
				if err != nil || res.Err != nil || !bytes.Equal(res.Stdout, body) {
					b.Fatalf("invoke: %v %v", err, res)
				}
			}
		})
	}
}
