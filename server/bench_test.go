package server_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/internal/testmodules"
)

// benchHarness is a daemon on a real loopback listener and a client with
// keep-alive connections, as a load generator would use.
func benchHarness(b *testing.B, name string, module []byte) (*http.Client, string) {
	b.Helper()
	h := start(b, b.TempDir())
	ref, err := h.c.UploadArtifact(context.Background(), bytes.NewReader(module))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := h.c.Deploy(context.Background(), name, api.FunctionSpec{Artifact: ref.Digest, MemoryMB: 64}); err != nil {
		b.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	return hc, h.srv.URL + "/v1/functions/" + name + "/invoke"
}

func post(b *testing.B, hc *http.Client, url string, body []byte) {
	resp, err := hc.Post(url, "text/plain", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

// BenchmarkHTTPInvoke is one client invoking sequentially over loopback:
// every request gets a fresh instance. It reports p50 and p99 latency.
func BenchmarkHTTPInvoke(b *testing.B) {
	for _, m := range []struct {
		name string
		bin  []byte
	}{
		{"echo-wat", testmodules.Echo},
		{"hello-go", testmodules.BuildGo(b, "examples/hello-go")},
		{"hello-go-snapshot", testmodules.BuildGoReactor(b, "examples/hello-go")},
	} {
		b.Run(m.name, func(b *testing.B) {
			hc, url := benchHarness(b, m.name, m.bin)
			body := []byte("kindling")
			post(b, hc, url, body) // warm the connection
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				post(b, hc, url, body)
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkHTTPThroughput is many concurrent clients (8 per core) invoking
// the tiny module; it reports invocations per second.
func BenchmarkHTTPThroughput(b *testing.B) {
	hc, url := benchHarness(b, "echo-wat", testmodules.Echo)
	body := []byte("kindling")
	var n atomic.Int64
	b.SetParallelism(8)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			post(b, hc, url, body)
			n.Add(1)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "invocations/s")
}
