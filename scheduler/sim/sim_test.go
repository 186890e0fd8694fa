package sim

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/scheduler"
	"github.com/kindling-dev/kindling/trace"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// The Azure samples live with the trace readers.
var traceData = filepath.Join("..", "..", "trace", "testdata")

func policies(t testing.TB, names ...string) []scheduler.Policy {
	t.Helper()
	var out []scheduler.Policy
	for _, n := range names {
		p, err := scheduler.ParsePolicy(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// TestRun_Azure2019 replays the 8-hour, 100-function Azure sample under
// the policies of the report and checks the comparisons it makes.
func TestRun_Azure2019(t *testing.T) {
	tr, err := trace.LoadAzure2019(filepath.Join(traceData, "azure2019-100"), trace.Azure2019Options{})
	if err != nil {
		t.Fatal(err)
	}
	if raceEnabled { // the race detector slows the replay ~10x: keep the first two hours
		n := 0
		for n < len(tr) && tr[n].Arrival < 2*time.Hour {
			n++
		}
		tr = tr[:n]
	}
	start := time.Now()
	res, err := Run(context.Background(), tr, Config{}, policies(t, "fixed", "none", "hybrid", "hybrid:fallback=10m")...)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, res); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d invocations, 4 policies in %v:\n%s", len(tr), elapsed.Round(time.Millisecond), buf.String())
	if !raceEnabled && elapsed > 10*time.Second {
		t.Errorf("replay took %v, want under 10s", elapsed)
	}
	fixed, none, hybrid, hybridShort := res[0], res[1], res[2], res[3]
	for _, r := range res {
		if r.Invocations != len(tr) || r.Rejected != 0 || r.ColdStarts == 0 {
			t.Errorf("%s: %+v", r.Policy, r)
		}
	}
	if none.IdleMemoryGBs != 0 || none.ColdStartRate < 10*fixed.ColdStartRate {
		t.Errorf("none: %+v", none)
	}
	if hybrid.PreWarmed == 0 {
		t.Error("hybrid never pre-warmed")
	}
	if float64(hybrid.ColdStarts) > 1.5*float64(fixed.ColdStarts) || float64(hybridShort.ColdStarts) > 1.5*float64(fixed.ColdStarts) {
		t.Errorf("hybrid cold starts %d and %d, fixed %d", hybrid.ColdStarts, hybridShort.ColdStarts, fixed.ColdStarts)
	}
	if !raceEnabled && hybridShort.IdleMemoryGBs >= fixed.IdleMemoryGBs {
		t.Errorf("hybrid with a 10m fallback keeps %.0f GB·s idle, fixed %.0f", hybridShort.IdleMemoryGBs, fixed.IdleMemoryGBs)
	}
}

// TestRun_Deterministic replays a real slice and a bursty synthetic trace
// on a small node (so evictions happen) twice, and against a golden table.
func TestRun_Deterministic(t *testing.T) {
	azure, err := trace.LoadAzure2019(filepath.Join(traceData, "azure2019-small"), trace.Azure2019Options{})
	if err != nil {
		t.Fatal(err)
	}
	synth, err := trace.Synthetic(trace.SyntheticConfig{Seed: 3, Functions: 12, Length: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, tc := range []struct {
		name string
		tr   []trace.Invocation
		cfg  Config
	}{
		{"azure2019-small", azure, Config{}},
		{"synthetic on 1 GB", synth, Config{MemoryBudgetMB: 1024, StartCost: 250 * time.Millisecond}},
	} {
		pols := policies(t, "fixed", "none", "hybrid")
		a, err := Run(context.Background(), tc.tr, tc.cfg, pols...)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Run(context.Background(), tc.tr, tc.cfg, pols...)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: two runs differ:\n%+v\n%+v", tc.name, a, b)
		}
		if tc.cfg.MemoryBudgetMB > 0 {
			for _, r := range a {
				if r.PeakMemoryMB > tc.cfg.MemoryBudgetMB {
					t.Errorf("%s %s: peak %d MB over the budget", tc.name, r.Policy, r.PeakMemoryMB)
				}
			}
		}
		out.WriteString(tc.name + "\n")
		if err := WriteTable(&out, a); err != nil {
			t.Fatal(err)
		}
	}
	golden := filepath.Join("testdata", "deterministic.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if out.String() != string(want) {
		t.Fatalf("tables differ from %s:\n%s\nwant:\n%s", golden, out.String(), want)
	}
}

func TestRun_AddedLatency(t *testing.T) {
	inv := func(fn string, at, dur time.Duration) trace.Invocation {
		return trace.Invocation{Function: fn, Arrival: at, Duration: dur, MemoryMB: 128}
	}
	for _, tc := range []struct {
		name          string
		tr            []trace.Invocation
		cfg           Config
		cold          int
		p50, p99, max time.Duration
	}{
		{
			name: "one cold start",
			tr:   []trace.Invocation{inv("f", 0, time.Second), inv("f", time.Minute, time.Second)},
			cold: 1, p50: 0, p99: 100 * time.Millisecond, max: 100 * time.Millisecond,
		},
		{
			name: "per-function start cost",
			tr:   []trace.Invocation{inv("f", 0, time.Second), inv("g", 0, time.Second)},
			cfg:  Config{StartCosts: map[string]time.Duration{"g": 2 * time.Second}},
			cold: 2, p50: 100 * time.Millisecond, p99: 2 * time.Second, max: 2 * time.Second,
		},
		{
			// With one instance, the second request waits for the start
			// and for the first request's second of work.
			name: "queueing behind the only instance",
			tr:   []trace.Invocation{inv("f", 0, time.Second), inv("f", 0, time.Second)},
			cfg:  Config{MaxInstances: 1},
			cold: 1, p50: 100 * time.Millisecond, p99: 1100 * time.Millisecond, max: 1100 * time.Millisecond,
		},
		{
			name: "two instances start in parallel",
			tr:   []trace.Invocation{inv("f", 0, time.Second), inv("f", 0, time.Second)},
			cold: 2, p50: 100 * time.Millisecond, p99: 100 * time.Millisecond, max: 100 * time.Millisecond,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Run(context.Background(), tc.tr, tc.cfg, scheduler.Fixed(10*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			if r.ColdStarts != tc.cold || r.LatencyP50 != tc.p50 || r.LatencyP99 != tc.p99 || r.LatencyMax != tc.max {
				t.Fatalf("got cold %d, p50 %v, p99 %v, max %v; want %d, %v, %v, %v",
					r.ColdStarts, r.LatencyP50, r.LatencyP99, r.LatencyMax, tc.cold, tc.p50, tc.p99, tc.max)
			}
		})
	}
}

func TestRun_IdleMemory(t *testing.T) {
	// One 512 MB instance idle from 1s to the horizon at 1m: 59 s * 0.5 GB.
	tr := []trace.Invocation{{Function: "f", Duration: time.Second - 100*time.Millisecond, MemoryMB: 512}}
	res, err := Run(context.Background(), tr, Config{Horizon: time.Minute}, scheduler.Fixed(time.Hour), scheduler.None())
	if err != nil {
		t.Fatal(err)
	}
	if got := res[0].IdleMemoryGBs; got != 29.5 || res[0].PeakMemoryMB != 512 || res[0].InstancesStarted != 1 {
		t.Fatalf("fixed: %+v", res[0])
	}
	if got := res[1].IdleMemoryGBs; got != 0 {
		t.Fatalf("none: %v GB·s idle", got)
	}
}

func TestRun_Progress(t *testing.T) {
	tr, err := trace.Synthetic(trace.SyntheticConfig{Seed: 1, Functions: 3, Length: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var calls []Progress
	_, err = Run(context.Background(), tr, Config{ProgressEvery: 100, Progress: func(p Progress) { calls = append(calls, p) }},
		policies(t, "fixed", "none")...)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * (1 + (len(tr)-1)/100); len(calls) != want {
		t.Fatalf("%d progress calls, want %d", len(calls), want)
	}
	if last := calls[len(calls)-1]; last.Policy != "none" || last.Done != len(tr) || last.Total != len(tr) {
		t.Fatalf("last progress %+v", last)
	}
}

func TestRun_Errors(t *testing.T) {
	ok := []trace.Invocation{{Function: "f", Arrival: time.Second}}
	unsorted := []trace.Invocation{{Function: "f", Arrival: time.Second}, {Function: "f"}}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		tr       []trace.Invocation
		policies []scheduler.Policy
		want     error
	}{
		{"no policies", context.Background(), ok, nil, errdefs.ErrInvalidArgument},
		{"nil policy", context.Background(), ok, []scheduler.Policy{nil}, errdefs.ErrInvalidArgument},
		{"unsorted", context.Background(), unsorted, []scheduler.Policy{scheduler.None()}, errdefs.ErrInvalidArgument},
		{"canceled", canceled, ok, []scheduler.Policy{scheduler.None()}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Run(tc.ctx, tc.tr, Config{}, tc.policies...); !errors.Is(err, tc.want) {
				t.Fatalf("Run = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	err := WriteTable(&buf, []Result{
		{Policy: "fixed:10m", Invocations: 1000, ColdStarts: 10, ColdStartRate: 0.01, LatencyP99: 100 * time.Millisecond, IdleMemoryGBs: 12.34},
		{Policy: "none", Invocations: 1000, ColdStarts: 1000, ColdStartRate: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "cold rate") || !strings.Contains(lines[1], "1.00%") || !strings.Contains(lines[2], "100.00%") {
		t.Fatalf("table:\n%s", buf.String())
	}
	for _, l := range lines[1:] {
		if len(l) != len(lines[0]) {
			t.Fatalf("columns not aligned:\n%s", buf.String())
		}
	}
}
