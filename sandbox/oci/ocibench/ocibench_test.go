package ocibench

import (
	"bytes"
	"context"
	"flag"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/internal/ocitest"
)

var runs = flag.Int("runs", 2, "runs per column (go test ./sandbox/oci/ocibench -run TestRun -v -args -runs 10 for more)")

// TestRun runs the table briefly on hello-world against the real runtimes
// and containerd, and checks every cell this host can fill, the ratios and
// the text.
func TestRun(t *testing.T) {
	ocitest.RequireRuntime(t, "runc")
	if _, err := exec.LookPath("crun"); err == nil {
		ocitest.FixHybridCgroups(t) // as every crun test does
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ws, err := BuildWorkloads(ctx, t.TempDir(), "hello-world")
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	tab, err := Run(ctx, Options{Runs: *runs, Workloads: ws, Progress: &progress, AgentPath: ocitest.Build(t).Agent})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	out := tab.String()
	t.Logf("\n%s\n%s", progress.String(), out)
	for col, why := range tab.Unavailable {
		t.Logf("column %s unavailable: %s", col, why)
	}
	if len(tab.Rows) != 1 || tab.Rows[0].Workload != "hello-world" {
		t.Fatalf("rows %+v", tab.Rows)
	}
	row := tab.Rows[0]
	for _, col := range Columns {
		s, ok := row.Cells[col]
		if _, missing := tab.Unavailable[col]; missing {
			if ok {
				t.Errorf("%s: unavailable yet measured", col)
			}
			continue
		}
		if s.N != *runs || s.Median <= 0 || s.P90 < s.Median || s.Min <= 0 {
			t.Errorf("%s: %+v", col, s)
		}
	}
	// runc is installed (required above): its columns are all there.
	for _, col := range []string{ColumnKindlingRunc, ColumnRuncRun, ColumnWarm, ColumnHostExec} {
		if _, missing := tab.Unavailable[col]; missing {
			t.Errorf("%s unavailable: %s", col, tab.Unavailable[col])
		}
	}
	phases := map[string]bool{}
	for _, p := range row.Phases[ColumnKindlingRunc] {
		phases[string(p.Name)] = p.N == *runs && p.Median > 0
	}
	for _, want := range []string{"compile", "rootfs", "bundle", "instantiate", "ready", "run", "teardown"} {
		if !phases[want] {
			t.Errorf("kindling oci/runc phase %s missing or empty: %+v", want, row.Phases[ColumnKindlingRunc])
		}
	}
	if len(row.Ratios) != 5 {
		t.Fatalf("ratios %+v", row.Ratios)
	}
	for _, r := range row.Ratios {
		_, crunMissing := tab.Unavailable[ColumnKindlingCrun]
		_, ctrMissing := tab.Unavailable[ColumnCtrRun]
		needsMissing := (crunMissing && strings.Contains(r.Name, "crun")) || (ctrMissing && strings.Contains(r.Name, "ctr"))
		if r.OK == needsMissing || (r.OK && r.Value == 0) {
			t.Errorf("ratio %+v", r)
		}
	}
	for _, want := range []string{"workload", "hello-world", ColumnKindlingRunc, ColumnRuncRun, ColumnCtrRun, ColumnWarm,
		"instantiate", "ratios of medians", ColumnKindlingRunc + " ÷ " + ColumnRuncRun, "≤ 1.5×"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q", want)
		}
	}
}

// Unavailable columns and ratios print as n/a, with the reason.
func TestWriteText_Unavailable(t *testing.T) {
	row := Row{Workload: "w", Cells: map[string]Stat{
		ColumnKindlingRunc: {Median: 40 * time.Millisecond, P90: 45 * time.Millisecond, N: 3},
		ColumnRuncRun:      {Median: 40 * time.Millisecond, P90: 41 * time.Millisecond, N: 3},
		ColumnWarm:         {Median: 5 * time.Millisecond, P90: 6 * time.Millisecond, N: 3},
		ColumnHostExec:     {Median: 4500 * time.Microsecond, P90: 5 * time.Millisecond, N: 3},
	}}
	row.Ratios = ratios(row)
	tab := &Table{Runs: 3, MemoryMB: 1024, Columns: Columns, Rows: []Row{row},
		Unavailable: map[string]string{ColumnKindlingCrun: "crun not installed", ColumnCrunRun: "crun not installed", ColumnCtrRun: "ctr not installed"}}
	out := tab.String()
	t.Log("\n" + out)
	for _, want := range []string{"n/a (crun not installed)", "n/a (ctr not installed)", "40.0 (45.0)", "5.00 (6.00)", "1.00× (met)", "+0.50 ms (met)"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q", want)
		}
	}
	if got := row.Ratios[2]; got.OK {
		t.Errorf("ctr ratio computed without ctr: %+v", got)
	}
}
