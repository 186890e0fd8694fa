package microvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kindling-dev/kindling/internal/quantile"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/workloads"
)

// BenchWorkload is one function Bench measures.
type BenchWorkload = workloads.Binary

// BuildBenchWorkloads builds the named workloads (default hello-world,
// json and image) for the guest into dir.
func BuildBenchWorkloads(ctx context.Context, dir string, names ...string) ([]BenchWorkload, error) {
	if len(names) == 0 {
		names = []string{"hello-world", "json", "image"}
	}
	ws, err := workloads.BuildLinux(ctx, dir, names...)
	if err != nil {
		return nil, fmt.Errorf("microvm: bench: %w", err)
	}
	return ws, nil
}

// BenchOptions configure Bench.
type BenchOptions struct {
	// Config is the manager's configuration; Root is a scratch directory
	// the bench fills and empties.
	Config    Config
	Workloads []BenchWorkload
	// Runs is the number of measured runs per column (default 5).
	Runs int
	// Progress, when set, receives a line per run.
	Progress io.Writer
}

// Bench columns: how each run starts its VM.
const (
	ColumnColdBoot    = "cold boot"      // boot a fresh VM
	ColumnRestore     = "restore"        // clone the template, its pages in the page cache
	ColumnRestoreDisk = "restore (disk)" // clone after dropping the template's page cache
	ColumnWorkingSet  = "+ working set"  // ... prefetching the REAP working set
	ColumnLoadingSet  = "+ loading set"  // ... prefetching the FaaSnap loading set
)

const (
	benchDefaultRuns    = 5
	benchInvokeDeadline = 2 * time.Minute
)

var benchColumns = []string{ColumnColdBoot, ColumnRestore, ColumnRestoreDisk, ColumnWorkingSet, ColumnLoadingSet}

// BenchTable is Bench's result: per workload, per column, the median of
// each phase and of the total (start to first response).
type BenchTable struct {
	Accel     AccelChoice        `json:"accel"`
	Runs      int                `json:"runs"`
	Columns   []string           `json:"columns"`
	Workloads []BenchWorkloadRow `json:"workloads"`
}

// BenchWorkloadRow is one workload's results, a cell per column.
type BenchWorkloadRow struct {
	Name            string      `json:"name"`
	Cells           []BenchCell `json:"cells"`
	WorkingSetPages uint64      `json:"workingSetPages"`
	LoadingSetPages uint64      `json:"loadingSetPages"`
}

// BenchCell is one column of one workload.
type BenchCell struct {
	Column string `json:"column"`
	// Phases are each phase's median over the runs.
	Phases []phase.Timing `json:"phases"`
	// Total is the median start-to-first-response time; Min and Max bound it.
	Total time.Duration `json:"totalNs"`
	Min   time.Duration `json:"minNs"`
	Max   time.Duration `json:"maxNs"`
}

// Bench measures, for each workload, a cold boot against restores from the
// workload's template: with the template's pages in the page cache, after
// dropping them, and after dropping them with a working-set or a
// loading-set prefetch. The columns of one run are interleaved, in an order
// rotated from run to run, so a noisy host affects them alike. Every run checks the function's result.
func Bench(ctx context.Context, opts BenchOptions) (*BenchTable, error) {
	if opts.Runs <= 0 {
		opts.Runs = benchDefaultRuns
	}
	if len(opts.Workloads) == 0 {
		return nil, errors.New("microvm: bench: no workloads")
	}
	m, err := NewManager(ctx, opts.Config)
	if err != nil {
		return nil, err
	}
	defer m.Close(ctx)
	table := &BenchTable{Accel: m.Accel(), Runs: opts.Runs, Columns: benchColumns}
	for _, w := range opts.Workloads {
		row, err := benchWorkload(ctx, m, w, opts)
		if err != nil {
			return nil, fmt.Errorf("microvm: bench %s: %w", w.Name, err)
		}
		table.Workloads = append(table.Workloads, row)
	}
	return table, nil
}

func benchWorkload(ctx context.Context, m *Manager, w BenchWorkload, opts BenchOptions) (BenchWorkloadRow, error) {
	row := BenchWorkloadRow{Name: w.Name}
	progress := func(format string, args ...any) {
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, "bench microvm %s: "+format+"\n", append([]any{w.Name}, args...)...)
		}
	}
	fn, err := os.ReadFile(w.Path)
	if err != nil {
		return row, err
	}
	if err := checkExecutable(fn); err != nil {
		return row, err
	}
	img, err := initramfs(m.guest.agent, fn, m.guest.modules)
	if err != nil {
		return row, err
	}
	initrd := filepath.Join(m.cfg.Root, dirTmp, "bench-"+w.Name+".cpio")
	if err := os.WriteFile(initrd, img, 0o644); err != nil {
		return row, err
	}
	defer os.Remove(initrd)

	// The template, and its sets recorded by a first restore from disk.
	progress("booting the template")
	v, err := m.bootVM(ctx, newID("bench"), initrd, w.Name, m.cfg.MemoryMB, nil)
	if err != nil {
		return row, err
	}
	snap, err := m.createSnapshot(ctx, v.id, snapshotMeta{ID: newID("bench-" + sanitize(w.Name)), Function: w.Name}, nil)
	if err != nil {
		return row, err
	}
	defer m.DeleteSnapshot(ctx, snap.ID)
	req := InvokeRequest{Stdin: w.Stdin, TimeoutMs: int(benchInvokeDeadline / time.Millisecond)}
	check := func(res InvokeResult, err error) error {
		if err != nil {
			return err
		}
		return w.Check(res.Stdout)
	}
	if err := check(m.InvokeSnapshot(ctx, snap.ID, req, RestoreOptions{DropCache: true, RecordLoadingSet: true, RecordWorkingSet: true})); err != nil {
		return row, fmt.Errorf("recording run: %w", err)
	}
	info, _ := m.Snapshot(snap.ID)
	row.WorkingSetPages, row.LoadingSetPages = info.WorkingSetPages, info.LoadingSetPages

	runs := make(map[string][][]phase.Timing)
	for i := 0; i < opts.Runs; i++ {
		// Rotate the columns' order from run to run, so what one column
		// leaves behind (page cache, writeback, a warm CPU cache) does not
		// always fall on the same neighbour.
		for k := range benchColumns {
			col := benchColumns[(i+k)%len(benchColumns)]
			var res InvokeResult
			var err error
			switch col {
			case ColumnColdBoot:
				res, err = benchColdBoot(ctx, m, initrd, w.Name, req)
			case ColumnRestore:
				res, err = m.InvokeSnapshot(ctx, snap.ID, req, RestoreOptions{Prefetch: PrefetchNone})
			case ColumnRestoreDisk:
				res, err = m.InvokeSnapshot(ctx, snap.ID, req, RestoreOptions{Prefetch: PrefetchNone, DropCache: true})
			case ColumnWorkingSet:
				res, err = m.InvokeSnapshot(ctx, snap.ID, req, RestoreOptions{Prefetch: PrefetchWorkingSet, DropCache: true})
			case ColumnLoadingSet:
				res, err = m.InvokeSnapshot(ctx, snap.ID, req, RestoreOptions{Prefetch: PrefetchLoadingSet, DropCache: true})
			}
			if err := check(res, err); err != nil {
				return row, fmt.Errorf("%s, run %d: %w", col, i+1, err)
			}
			runs[col] = append(runs[col], res.Phases)
			progress("%s run %d: %v", col, i+1, phase.Total(res.Phases).Round(time.Millisecond))
		}
	}
	for _, col := range benchColumns {
		row.Cells = append(row.Cells, summarize(col, runs[col]))
	}
	return row, nil
}

// benchColdBoot boots a VM for the function and invokes it once.
func benchColdBoot(ctx context.Context, m *Manager, initrd, name string, req InvokeRequest) (InvokeResult, error) {
	rec := phase.NewRecorder()
	v, err := m.bootVM(ctx, newID("bench"), initrd, name, m.cfg.MemoryMB, rec)
	if err != nil {
		return InvokeResult{}, err
	}
	defer m.DeleteVM(ctx, v.id)
	res, err := m.invoke(ctx, v, req, rec)
	res.Phases = rec.Timings()
	return res, err
}

// summarize takes each phase's median and the totals' median, min, max.
func summarize(col string, runs [][]phase.Timing) BenchCell {
	cell := BenchCell{Column: col}
	var order []phase.Name
	byName := map[phase.Name][]time.Duration{}
	var totals []time.Duration
	for _, ts := range runs {
		for _, t := range ts {
			if _, ok := byName[t.Name]; !ok {
				order = append(order, t.Name)
			}
			byName[t.Name] = append(byName[t.Name], t.Duration)
		}
		totals = append(totals, phase.Total(ts))
	}
	for _, name := range order {
		cell.Phases = append(cell.Phases, phase.Timing{Name: name, Duration: quantile.Summarize(byName[name]).Median})
	}
	t := quantile.Summarize(totals)
	cell.Total, cell.Min, cell.Max = t.Median, t.Min, t.Max
	return cell
}

// Format writes the table as text: per workload, a row per phase and a
// column per way of starting, then the totals and their ratio to a cold
// boot.
func (t *BenchTable) Format(w io.Writer) error {
	fmt.Fprintf(w, "microvm bench: accel %s", t.Accel.Accel)
	if t.Accel.Reason != "" {
		fmt.Fprintf(w, " (%s)", t.Accel.Reason)
	}
	fmt.Fprintf(w, "; medians of %d runs; total = start to first response\n", t.Runs)
	for _, row := range t.Workloads {
		fmt.Fprintf(w, "\n%s (working set %d pages, loading set %d pages)\n", row.Name, row.WorkingSetPages, row.LoadingSetPages)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "phase\t")
		for _, c := range row.Cells {
			fmt.Fprintf(tw, "%s\t", c.Column)
		}
		fmt.Fprintln(tw)
		// Phases in the order they happen, whichever column has them.
		names := []phase.Name{phase.Instantiate, PhaseBoot, phase.Restore, PhasePrefetch, PhaseAgentReady, phase.Run}
		for _, c := range row.Cells {
			for _, p := range c.Phases {
				if !slices.Contains(names, p.Name) {
					names = append(names, p.Name)
				}
			}
		}
		for _, n := range names {
			fmt.Fprintf(tw, "%s\t", n)
			for _, c := range row.Cells {
				cell := "-"
				for _, p := range c.Phases {
					if p.Name == n {
						cell = fmtMs(p.Duration)
					}
				}
				fmt.Fprintf(tw, "%s\t", cell)
			}
			fmt.Fprintln(tw)
		}
		fmt.Fprint(tw, "total\t")
		for _, c := range row.Cells {
			fmt.Fprintf(tw, "%s\t", fmtMs(c.Total))
		}
		fmt.Fprintln(tw)
		fmt.Fprint(tw, "min-max\t")
		for _, c := range row.Cells {
			fmt.Fprintf(tw, "%s-%s\t", fmtMs(c.Min), fmtMs(c.Max))
		}
		fmt.Fprintln(tw)
		fmt.Fprint(tw, "vs cold boot\t")
		for _, c := range row.Cells {
			ratio := "-"
			if c.Total > 0 && len(row.Cells) > 0 {
				ratio = fmt.Sprintf("%.1fx", float64(row.Cells[0].Total)/float64(c.Total))
			}
			fmt.Fprintf(tw, "%s\t", ratio)
		}
		fmt.Fprintln(tw)
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// String is the table as Format writes it.
func (t *BenchTable) String() string {
	var b strings.Builder
	t.Format(&b)
	return b.String()
}

func fmtMs(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
