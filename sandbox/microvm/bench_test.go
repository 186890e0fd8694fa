package microvm

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/sandbox/sandboxtest"
)

// TestBench runs the bench once on hello-world: every column works and
// checks the result. KINDLING_MICROVM_BENCH_RUNS=N (and
// KINDLING_MICROVM_BENCH=hello-world,json,image) make it the full
// benchmark, printing the table.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs; -short")
	}
	cfg := testConfig(t)
	names := []string{"hello-world"}
	if s := os.Getenv("KINDLING_MICROVM_BENCH"); s != "" {
		names = strings.Split(s, ",")
	}
	runs, _ := strconv.Atoi(os.Getenv("KINDLING_MICROVM_BENCH_RUNS"))
	if runs == 0 {
		runs = 1
	}
	ctx := timeout(t, 30*time.Minute)
	ws, err := BuildBenchWorkloads(ctx, t.TempDir(), names...)
	if err != nil {
		t.Fatal(err)
	}
	opts := BenchOptions{Config: cfg, Workloads: ws, Runs: runs}
	if testing.Verbose() {
		opts.Progress = os.Stderr
	}
	table, err := Bench(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + table.String())
	for _, row := range table.Workloads {
		if len(row.Cells) != len(benchColumns) || row.WorkingSetPages == 0 {
			t.Errorf("%s: incomplete row %+v", row.Name, row)
		}
	}
	checkClean(t, cfg.Root)
}

// BenchmarkStart is the shared cold-start benchmark body (sandboxtest) on
// the hello fixture: a clone of the template per iteration.
func BenchmarkStart(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts []Option
	}{
		{"restore", nil},
		{"boot", []Option{WithColdBoot()}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			d := newTestDriver(b, mode.opts...)
			sandboxtest.BenchmarkColdStart(b, d, sandboxtest.Spec("hello", fixture(b, "hello"), 128), nil)
		})
	}
}
