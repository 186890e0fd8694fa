package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// noValue fills a cell whose column does not have the phase.
const noValue = "–"

// WriteText writes the report as text tables: for each workload, a row per
// phase and a column per sandbox mode or peer, each cell "median (p90)";
// then the totals of every workload side by side.
func (r *Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "kindling bench: %s × %s; cells are median (p90) over the runs\n",
		plural(len(r.Workloads), "workload"), plural(len(r.Columns), "column"))
	fmt.Fprintf(ew, "host: %s\n", r.Host)
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	for _, c := range r.Columns {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", c.Name, c.runsText(), c.About)
	}
	tw.Flush()

	for _, wr := range r.Workloads {
		fmt.Fprintln(ew)
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprint(tw, wr.Name)
		for _, c := range wr.Cells {
			fmt.Fprintf(tw, "\t%s", c.Column)
		}
		fmt.Fprintln(tw)
		for _, name := range r.Phases {
			fmt.Fprintf(tw, "  %s", name)
			for _, c := range wr.Cells {
				cell := noValue
				if p, ok := c.Phase(name); ok {
					cell = medianP90(p.Stat)
				}
				fmt.Fprintf(tw, "\t%s", cell)
			}
			fmt.Fprintln(tw)
		}
		fmt.Fprint(tw, "  total")
		for _, c := range wr.Cells {
			fmt.Fprintf(tw, "\t%s", medianP90(c.Total))
		}
		fmt.Fprintln(tw)
		if r.hasRatios() {
			fmt.Fprintf(tw, "  × %s", r.Baseline)
			for _, c := range wr.Cells {
				fmt.Fprintf(tw, "\t%s", formatRatio(c.Ratio))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}

	if len(r.Workloads) > 1 {
		fmt.Fprintln(ew)
		what := "median total"
		if r.hasRatios() {
			what += " (× " + r.Baseline + ")"
		}
		fmt.Fprintf(ew, "summary: %s\n", what)
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprint(tw, "workload")
		for _, c := range r.Columns {
			fmt.Fprintf(tw, "\t%s", c.Name)
		}
		fmt.Fprintln(tw)
		for _, wr := range r.Workloads {
			fmt.Fprint(tw, wr.Name)
			for _, c := range wr.Cells {
				cell := formatDuration(c.Total.Median())
				if c.Ratio > 0 {
					cell += " (" + formatRatio(c.Ratio) + ")"
				}
				fmt.Fprintf(tw, "\t%s", cell)
			}
			fmt.Fprintln(tw)
		}
		if r.hasRatios() {
			fmt.Fprint(tw, "geomean")
			for _, s := range r.Summary {
				fmt.Fprintf(tw, "\t%s", formatRatio(s.GeomeanRatio))
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}

	if len(r.Notes) > 0 {
		fmt.Fprintln(ew)
		for _, n := range r.Notes {
			fmt.Fprintf(ew, "note: %s\n", n)
		}
	}
	fmt.Fprintf(ew, "\nwall time %s\n", time.Duration(r.WallNs).Round(time.Second/10))
	if ew.err != nil {
		return fmt.Errorf("bench: write text report: %w", ew.err)
	}
	return nil
}

func (h Host) String() string {
	s := fmt.Sprintf("%s/%s, %d CPUs, %s", h.OS, h.Arch, h.CPUs, h.Go)
	if h.Wazero != "" {
		s += ", wazero " + h.Wazero
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func (c ColumnInfo) runsText() string {
	s := plural(c.Runs, "run")
	if c.Warmup > 0 {
		s += fmt.Sprintf(" (+%d warm-up)", c.Warmup)
	}
	return s
}

func (r *Report) hasRatios() bool {
	for _, s := range r.Summary {
		if s.GeomeanRatio > 0 {
			return true
		}
	}
	return false
}

func medianP90(s Stat) string {
	return formatDuration(s.Median()) + " (" + formatDuration(s.P90()) + ")"
}

// formatDuration renders d with three significant digits in a unit that
// suits it: 812ns, 41.2µs, 3.05ms, 1.52s.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return sig3(float64(d)/float64(time.Microsecond)) + "µs"
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + "ms"
	default:
		return sig3(d.Seconds()) + "s"
	}
}

// sig3 formats v (at least 1) with three significant digits.
func sig3(v float64) string {
	switch {
	case v < 9.995:
		return fmt.Sprintf("%.2f", v)
	case v < 99.95:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// formatRatio renders a ratio to the baseline: 0.91×, 20.3×, 812×.
func formatRatio(x float64) string {
	if x <= 0 {
		return noValue
	}
	if x < 1 {
		return fmt.Sprintf("%.2f×", x)
	}
	return strings.TrimSuffix(sig3(x), ".") + "×"
}

// errWriter remembers the first write error, so the formatting code can
// ignore them.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
