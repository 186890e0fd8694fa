package shimbench

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/shim/containerdtest"
)

var runs = flag.Int("runs", 2, "pods per runtime (go test -run TestRun -v -args -runs 20 for the recorded numbers)")

// TestRun runs the benchmark briefly and checks its table; with -v it
// prints the numbers.
func TestRun(t *testing.T) {
	if reason := containerdtest.Missing(); reason != "" {
		t.Skip("benchmark skipped: " + reason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	tab, err := Run(ctx, Options{Runs: *runs, Dir: t.TempDir(), Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := tab.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s%s", progress.String(), out.String())
	if len(tab.Rows) != 2 {
		t.Fatalf("rows %v", tab.Rows)
	}
	for _, r := range tab.Rows {
		for _, step := range Steps {
			if s := r.Steps[step]; s.N != *runs || s.Median <= 0 {
				t.Errorf("%s %s: %+v", r.Runtime, step, s)
			}
		}
		if r.ShimRSS == 0 {
			t.Errorf("%s: no shim RSS", r.Runtime)
		}
	}
	if !strings.Contains(out.String(), "RunPodSandbox") {
		t.Errorf("table lacks the CRI steps:\n%s", out.String())
	}
}
