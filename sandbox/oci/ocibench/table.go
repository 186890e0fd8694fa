package ocibench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kindling-dev/kindling/internal/quantile"
	"github.com/kindling-dev/kindling/phase"
)

// Table is Run's result.
type Table struct {
	Runs     int
	MemoryMB int
	// LoadBefore and LoadAfter are the host's load averages (1, 5, 15
	// minutes) when the run began and ended.
	LoadBefore, LoadAfter string
	Columns               []string
	// Unavailable says, per column this host could not run, why.
	Unavailable map[string]string
	Rows        []Row
	// Notes hold the full errors behind unavailable columns.
	Notes []string
}

// Row is one workload's results.
type Row struct {
	Workload string
	// Cells are the totals by column; an unavailable column has none.
	Cells map[string]Stat
	// Phases are kindling's cold-start phases by kindling column, in
	// the order they happen; teardown (Close, after the response) is not
	// part of the cold start.
	Phases map[string][]PhaseStat
	Ratios []Ratio
}

// Stat summarizes one measurement over the runs.
type Stat quantile.Summary[time.Duration]

// PhaseStat is one phase over the runs.
type PhaseStat struct {
	Name phase.Name
	Stat
}

// Ratio compares two cells' medians.
type Ratio struct {
	// Name says what is compared ("kindling oci/runc ÷ runc run").
	Name string
	// Value is a ratio of medians, or with Diff a difference in ms.
	Value float64
	Diff  bool
	// Target is the goal ("≤ 1.5×"), Met whether Value reaches it.
	Target string
	Met    bool
	// OK is false when a cell it needs is unavailable.
	OK bool
}

// Targets of issue 6.
const (
	TargetColdVsBare   = 1.5 // kindling cold start ≤ 1.5× bare `runc run`
	TargetCtrVsCold    = 3   // ≥ 3× faster than `ctr run`
	TargetWarmOverhead = 1.0 // ms: warm invoke overhead < 1 ms
)

// ratios computes a row's ratios against the targets.
func ratios(r Row) []Ratio {
	div := func(name, num, den, target string, met func(float64) bool) Ratio {
		a, b := r.Cells[num], r.Cells[den]
		out := Ratio{Name: name, Target: target}
		if a.N > 0 && b.N > 0 && b.Median > 0 {
			out.Value, out.OK = float64(a.Median)/float64(b.Median), true
			out.Met = met(out.Value)
		}
		return out
	}
	coldMet := func(v float64) bool { return v <= TargetColdVsBare }
	ctrMet := func(v float64) bool { return v >= TargetCtrVsCold }
	out := []Ratio{
		div(ColumnKindlingRunc+" ÷ "+ColumnRuncRun, ColumnKindlingRunc, ColumnRuncRun, fmt.Sprintf("≤ %.1f×", TargetColdVsBare), coldMet),
		div(ColumnKindlingCrun+" ÷ "+ColumnCrunRun, ColumnKindlingCrun, ColumnCrunRun, fmt.Sprintf("≤ %.1f×", TargetColdVsBare), coldMet),
		div(ColumnCtrRun+" ÷ "+ColumnKindlingRunc, ColumnCtrRun, ColumnKindlingRunc, fmt.Sprintf("≥ %g×", float64(TargetCtrVsCold)), ctrMet),
		div(ColumnCtrRun+" ÷ "+ColumnKindlingCrun, ColumnCtrRun, ColumnKindlingCrun, fmt.Sprintf("≥ %g×", float64(TargetCtrVsCold)), ctrMet),
	}
	warm := Ratio{Name: ColumnWarm + " − " + ColumnHostExec, Diff: true, Target: fmt.Sprintf("< %g ms", TargetWarmOverhead)}
	if a, b := r.Cells[ColumnWarm], r.Cells[ColumnHostExec]; a.N > 0 && b.N > 0 {
		warm.Value, warm.OK = ms(a.Median-b.Median), true
		warm.Met = warm.Value < TargetWarmOverhead
	}
	return append(out, warm)
}

// phaseStats summarizes each phase over the samples, in the order the
// phases happen.
func phaseStats(ss []sample) []PhaseStat {
	var order []phase.Name
	by := map[phase.Name][]time.Duration{}
	for _, s := range ss {
		for _, t := range s.phases {
			if _, ok := by[t.Name]; !ok {
				order = append(order, t.Name)
			}
			by[t.Name] = append(by[t.Name], t.Duration)
		}
	}
	out := make([]PhaseStat, 0, len(order))
	for _, n := range order {
		out = append(out, PhaseStat{Name: n, Stat: Stat(quantile.Summarize(by[n]))})
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (s Stat) String() string {
	if s.N == 0 {
		return "-"
	}
	if s.P90 < 10*time.Millisecond {
		return fmt.Sprintf("%.2f (%.2f)", ms(s.Median), ms(s.P90))
	}
	return fmt.Sprintf("%.1f (%.1f)", ms(s.Median), ms(s.P90))
}

// cell is the text of a column's cell.
func (t *Table) cell(r Row, col string) string {
	if why, ok := t.Unavailable[col]; ok {
		return "n/a (" + why + ")"
	}
	return r.Cells[col].String()
}

// WriteText writes the table: a row per workload and a column per way of
// running it, each cell the median (p90 in parentheses) in milliseconds;
// then kindling's cold-start phases, and the ratios against the targets.
func (t *Table) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "oci cold start: kindling vs bare runtimes and ctr, same image and command; %d runs per column after a warm-up, median (p90) ms\n", t.Runs)
	fmt.Fprintf(&b, "every container %d MiB, %g CPU; load average %s before, %s after\n",
		t.MemoryMB, max(float64(t.MemoryMB)/1024, 0.1), t.LoadBefore, t.LoadAfter)
	fmt.Fprintf(&b, "kindling cold = Prepare (image in the store) + Start + first Invoke; runc/crun run = create, start, wait, delete\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "workload")
	for _, c := range t.Columns {
		fmt.Fprintf(tw, "\t%s", c)
	}
	fmt.Fprintln(tw)
	for _, r := range t.Rows {
		fmt.Fprint(tw, r.Workload)
		for _, c := range t.Columns {
			fmt.Fprintf(tw, "\t%s", t.cell(r, c))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()

	kcols := []string{ColumnKindlingRunc, ColumnKindlingCrun}
	fmt.Fprintf(&b, "\nkindling cold-start phases, median (p90) ms (teardown: Close, after the response, not in the cold start)\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "workload\tphase\t%s\n", strings.Join(kcols, "\t"))
	for _, r := range t.Rows {
		var names []phase.Name
		for _, c := range kcols {
			for _, p := range r.Phases[c] {
				if !slices.Contains(names, p.Name) {
					names = append(names, p.Name)
				}
			}
		}
		for i, n := range names {
			label := ""
			if i == 0 {
				label = r.Workload
			}
			fmt.Fprintf(tw, "%s\t%s", label, n)
			for _, c := range kcols {
				cell := "-"
				if why, ok := t.Unavailable[c]; ok {
					cell = "n/a (" + why + ")"
				}
				for _, p := range r.Phases[c] {
					if p.Name == n {
						cell = p.Stat.String()
					}
				}
				fmt.Fprintf(tw, "\t%s", cell)
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()

	fmt.Fprintf(&b, "\nratios of medians\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "ratio")
	for _, r := range t.Rows {
		fmt.Fprintf(tw, "\t%s", r.Workload)
	}
	fmt.Fprintln(tw, "\ttarget")
	if len(t.Rows) > 0 {
		for i, ratio := range t.Rows[0].Ratios {
			fmt.Fprint(tw, ratio.Name)
			for _, r := range t.Rows {
				fmt.Fprintf(tw, "\t%s", r.Ratios[i].text())
			}
			fmt.Fprintf(tw, "\t%s\n", ratio.Target)
		}
	}
	tw.Flush()
	for _, n := range t.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (r Ratio) text() string {
	if !r.OK {
		return "n/a"
	}
	verdict := "met"
	if !r.Met {
		verdict = "MISSED"
	}
	if r.Diff {
		return fmt.Sprintf("%+.2f ms (%s)", r.Value, verdict)
	}
	return fmt.Sprintf("%.2f× (%s)", r.Value, verdict)
}

// String is the table as WriteText writes it.
func (t *Table) String() string {
	var b strings.Builder
	t.WriteText(&b)
	return b.String()
}
