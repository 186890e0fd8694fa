package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/workloads"
)

// Environment of the helper process that runs the real workloads without
// the race detector.
const (
	helperBuildDir = "KINDLING_BENCH_HELPER_BUILD_DIR"
	helperOut      = "KINDLING_BENCH_HELPER_OUT"
)

// realWorkloads are the suite's workloads the test runs: small ones.
var realWorkloads = []string{"hello-world", "json"}

// runRealWorkloads runs realWorkloads, built in buildDir, in every mode
// and peer, a few runs each.
func runRealWorkloads(ctx context.Context, buildDir string) (*Report, error) {
	ws, err := BuildSuite(ctx, buildDir, []string{workloads.TargetWasm, workloads.TargetWasmReactor}, realWorkloads...)
	if err != nil {
		return nil, err
	}
	return Run(ctx, Options{
		Workloads: ws,
		Runs:      map[Mode]int{Cold: 1, Cached: 2, Warm: 3, Snapshot: 3},
	})
}

// TestRealWorkloads runs two workloads of the suite in every column and
// checks the report. Compiling a Go-built module under the race detector
// takes wazero's instrumented compiler ten times as long, so under -race
// the runs happen in a helper process (this package's tests built without
// it), and this process checks the report it writes.
func TestRealWorkloads(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles megabytes of WebAssembly; skipped with -short")
	}
	ctx := t.Context()
	buildDir := t.TempDir()

	// BuildSuite reuses its builds while the sources are unchanged.
	ws, err := BuildSuite(ctx, buildDir, []string{workloads.TargetWasm}, realWorkloads...)
	if err != nil {
		t.Fatal(err)
	}
	stamp := func() []time.Time {
		var out []time.Time
		for _, w := range ws {
			fi, err := os.Stat(w.Artifacts[workloads.TargetWasm])
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fi.ModTime())
		}
		return out
	}
	before := stamp()
	again, err := BuildSuite(ctx, buildDir, []string{workloads.TargetWasm}, realWorkloads...)
	if err != nil {
		t.Fatal(err)
	}
	if after := stamp(); len(again) != len(ws) || again[1].Artifacts[workloads.TargetWasm] != ws[1].Artifacts[workloads.TargetWasm] || !slices.Equal(before, after) {
		t.Errorf("the second BuildSuite rebuilt the workloads (%v, then %v)", before, after)
	}
	if ws[0].Name != "hello-world" || ws[0].Expected != "Hello, World!" {
		t.Errorf("BuildSuite returned %+v", ws[0])
	}

	var rep *Report
	if raceEnabled {
		rep = runHelper(t, buildDir)
	} else if rep, err = runRealWorkloads(ctx, buildDir); err != nil {
		t.Fatal(err)
	}

	for _, w := range realWorkloads {
		for _, col := range rep.Columns {
			c, ok := rep.Cell(w, col.Name)
			if !ok {
				t.Fatalf("no cell for %s in %s", w, col.Name)
			}
			if c.Total.MedianNs <= 0 || c.Ratio <= 0 {
				t.Errorf("%s/%s: total %+v, ratio %v", w, col.Name, c.Total, c.Ratio)
			}
		}
		cold, _ := rep.Cell(w, "wasm cold")
		warm, _ := rep.Cell(w, "wasm warm")
		if compile, _ := cold.Phase("compile"); compile.MedianNs < warm.Total.MedianNs || cold.Ratio <= 1 {
			t.Errorf("%s: a cold compile (%v) is not slower than a warm start (%v)", w, compile.Median(), warm.Total.Median())
		}
	}
	checkText(t, rep)
	checkJSON(t, rep)
}

// runHelper runs runRealWorkloads in this package's tests built without
// the race detector and returns the report it writes.
func runHelper(t *testing.T, buildDir string) *Report {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bench.test")
	start := time.Now()
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the helper without -race: %v\n%s", err, out)
	}
	t.Logf("built the helper in %v", time.Since(start).Round(time.Millisecond))
	out := filepath.Join(dir, "report.json")
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestRealWorkloadsHelper$", "-test.v")
	cmd.Env = append(os.Environ(), helperBuildDir+"="+buildDir, helperOut+"="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := ReadJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestRealWorkloadsHelper is the helper process of TestRealWorkloads.
func TestRealWorkloadsHelper(t *testing.T) {
	out := os.Getenv(helperOut)
	if out == "" {
		t.Skip("the helper process of TestRealWorkloads")
	}
	rep, err := runRealWorkloads(t.Context(), os.Getenv(helperBuildDir))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
