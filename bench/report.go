package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"github.com/kindling-dev/kindling/internal/quantile"
	"github.com/kindling-dev/kindling/phase"
)

// Schema names the format of the JSON report. It changes when the meaning
// of a field changes or a field goes away; new fields do not change it.
const Schema = "kindling.bench/v1"

// canonicalPhases are the table's first rows, in order, whether or not a
// column records them, so every sandbox shows the same segmented table.
var canonicalPhases = []phase.Name{
	phase.QueueWait, phase.ArtifactLoad, phase.Compile, phase.Instantiate,
	phase.Startup, phase.Run, phase.Teardown,
}

// Report is the result of a Run. Its JSON form is documented in README.md.
type Report struct {
	Schema  string    `json:"schema"`
	Started time.Time `json:"started"`
	// WallNs is the wall time of the whole run, set-up included.
	WallNs int64 `json:"wallNs"`
	Host   Host  `json:"host"`
	// MemoryMB is the memory limit of the instances.
	MemoryMB int `json:"memoryMB"`
	// Baseline is the column every Cell.Ratio divides by.
	Baseline string `json:"baseline"`
	// Phases are the table's rows: the shared phases in order, then any
	// other phase a column recorded.
	Phases    []phase.Name     `json:"phases"`
	Columns   []ColumnInfo     `json:"columns"`
	Workloads []WorkloadResult `json:"workloads"`
	// Summary has one entry per column, in column order.
	Summary []ColumnSummary `json:"summary"`
	// Notes say what was left out and why.
	Notes []string `json:"notes,omitempty"`
}

// Host describes the machine and build that produced a report.
type Host struct {
	OS     string `json:"os"`
	Arch   string `json:"arch"`
	CPUs   int    `json:"cpus"`
	Go     string `json:"go"`
	Wazero string `json:"wazero,omitempty"`
}

// WorkloadResult is one row group of the table: a workload in every column.
type WorkloadResult struct {
	Name string `json:"name"`
	// Cells has one entry per column, in column order.
	Cells []Cell `json:"cells"`
}

// Cell is one workload measured in one column.
type Cell struct {
	Column string `json:"column"`
	Runs   int    `json:"runs"`
	// Phases are the phases the column recorded, in Report.Phases order.
	Phases []PhaseStat `json:"phases"`
	// Total is over each run's sum of phases.
	Total Stat `json:"total"`
	// Ratio is Total.MedianNs divided by the baseline column's, for the
	// same workload; 0 when the run had no baseline column.
	Ratio float64 `json:"ratio,omitempty"`
	// TotalsNs are the measured runs' totals, in run order.
	TotalsNs []int64 `json:"totalsNs"`
}

// PhaseStat is one phase of a cell.
type PhaseStat struct {
	Name phase.Name `json:"name"`
	Stat
	// Detail is the phase's detail ("cache=miss"); distinct details of
	// different runs are joined with commas.
	Detail string `json:"detail,omitempty"`
}

// Stat summarizes durations over the measured runs, in nanoseconds. The
// percentiles interpolate linearly between the nearest runs.
type Stat struct {
	MedianNs int64 `json:"medianNs"`
	P90Ns    int64 `json:"p90Ns"`
	MinNs    int64 `json:"minNs"`
	MaxNs    int64 `json:"maxNs"`
}

// Median returns the median as a time.Duration.
func (s Stat) Median() time.Duration { return time.Duration(s.MedianNs) }

// P90 returns the 90th percentile as a time.Duration.
func (s Stat) P90() time.Duration { return time.Duration(s.P90Ns) }

// ColumnSummary sums a column up over every workload.
type ColumnSummary struct {
	Column string `json:"column"`
	// GeomeanRatio is the geometric mean of the column's ratios to the
	// baseline; 0 without a baseline.
	GeomeanRatio float64 `json:"geomeanRatio,omitempty"`
}

// Phase returns the cell's statistics for phase name.
func (c Cell) Phase(name phase.Name) (PhaseStat, bool) {
	for _, p := range c.Phases {
		if p.Name == name {
			return p, true
		}
	}
	return PhaseStat{}, false
}

// Cell returns the cell of workload in column.
func (r *Report) Cell(workload, column string) (Cell, bool) {
	for _, w := range r.Workloads {
		if w.Name != workload {
			continue
		}
		for _, c := range w.Cells {
			if c.Column == column {
				return c, true
			}
		}
	}
	return Cell{}, false
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("bench: write JSON report: %w", err)
	}
	return nil
}

// ReadJSON reads a report written by WriteJSON, rejecting other schemas.
func ReadJSON(rd io.Reader) (*Report, error) {
	var r Report
	if err := json.NewDecoder(rd).Decode(&r); err != nil {
		return nil, fmt.Errorf("bench: read JSON report: %w", err)
	}
	if r.Schema != Schema {
		return nil, fmt.Errorf("bench: read JSON report: schema %q, want %q", r.Schema, Schema)
	}
	return &r, nil
}

// summarize turns the measured runs of one cell into statistics.
func summarize(column string, runs [][]phase.Timing) Cell {
	c := Cell{Column: column, Runs: len(runs), TotalsNs: make([]int64, len(runs))}
	var order []phase.Name
	per := map[phase.Name][]int64{}
	details := map[phase.Name][]string{}
	for i, ts := range runs {
		for _, t := range ts {
			if _, ok := per[t.Name]; !ok {
				order = append(order, t.Name)
				per[t.Name] = make([]int64, len(runs)) // runs without it count 0
			}
			per[t.Name][i] += t.Duration.Nanoseconds()
			if t.Detail != "" && !slices.Contains(details[t.Name], t.Detail) {
				details[t.Name] = append(details[t.Name], t.Detail)
			}
		}
		c.TotalsNs[i] = phase.Total(ts).Nanoseconds()
	}
	for _, name := range orderPhases(order) {
		ps := PhaseStat{Name: name, Stat: stat(per[name])}
		for i, d := range details[name] {
			if i > 0 {
				ps.Detail += ","
			}
			ps.Detail += d
		}
		c.Phases = append(c.Phases, ps)
	}
	c.Total = stat(c.TotalsNs)
	return c
}

// orderPhases sorts names into table order: the shared phases first, the
// others after them as first seen.
func orderPhases(names []phase.Name) []phase.Name {
	var out []phase.Name
	for _, p := range canonicalPhases {
		if slices.Contains(names, p) {
			out = append(out, p)
		}
	}
	for _, p := range names {
		if !slices.Contains(canonicalPhases, p) {
			out = append(out, p)
		}
	}
	return out
}

func stat(ns []int64) Stat {
	if len(ns) == 0 {
		return Stat{}
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	return Stat{
		MedianNs: quantile.Interpolated(s, 0.5),
		P90Ns:    quantile.Interpolated(s, 0.9),
		MinNs:    s[0],
		MaxNs:    s[len(s)-1],
	}
}

// finish computes the rows, the ratios and the summary once every cell is
// measured.
func (r *Report) finish() {
	var seen []phase.Name
	for _, w := range r.Workloads {
		for _, c := range w.Cells {
			for _, p := range c.Phases {
				if !slices.Contains(seen, p.Name) {
					seen = append(seen, p.Name)
				}
			}
		}
	}
	r.Phases = slices.Clone(canonicalPhases)
	for _, p := range orderPhases(seen) {
		if !slices.Contains(r.Phases, p) {
			r.Phases = append(r.Phases, p)
		}
	}

	hasBaseline := slices.ContainsFunc(r.Columns, func(c ColumnInfo) bool { return c.Name == r.Baseline })
	if !hasBaseline {
		r.Notes = append(r.Notes, fmt.Sprintf("no ratios: the baseline column %q is not in this run", r.Baseline))
	}
	logSums := make([]float64, len(r.Columns))
	counts := make([]int, len(r.Columns))
	for wi := range r.Workloads {
		w := &r.Workloads[wi]
		base, ok := r.Cell(w.Name, r.Baseline)
		if !ok || base.Total.MedianNs <= 0 {
			continue
		}
		for ci := range w.Cells {
			c := &w.Cells[ci]
			c.Ratio = float64(c.Total.MedianNs) / float64(base.Total.MedianNs)
			if c.Ratio > 0 {
				logSums[ci] += math.Log(c.Ratio)
				counts[ci]++
			}
		}
	}
	r.Summary = make([]ColumnSummary, len(r.Columns))
	for i, col := range r.Columns {
		r.Summary[i].Column = col.Name
		if counts[i] > 0 {
			r.Summary[i].GeomeanRatio = math.Exp(logSums[i] / float64(counts[i]))
		}
	}
}

func thisHost() Host {
	h := Host{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == "github.com/tetratelabs/wazero" {
				h.Wazero = dep.Version
				if dep.Replace != nil {
					h.Wazero = dep.Replace.Version
				}
			}
		}
	}
	return h
}
