package bench

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"

	"github.com/kindling-dev/kindling/phase"
)

// WriteHTML writes the report as one self-contained HTML page: inline CSS
// and SVG, no scripts, fonts or other files. For each workload it draws a
// waterfall (a bar per column stacked from the median of each phase, on a
// linear time axis) and a bar chart of the total per column (median, with
// a whisker to the 90th percentile, on a logarithmic axis so that a warm
// start shows next to a compile), and it has the table of the text report.
func (r *Report) WriteHTML(w io.Writer) error {
	if err := htmlTemplate.Execute(w, r.htmlPage()); err != nil {
		return fmt.Errorf("bench: write HTML report: %w", err)
	}
	return nil
}

// Chart geometry, in SVG user units.
const (
	chartWidth  = 760.0
	labelWidth  = 110.0
	valueWidth  = 120.0
	plotWidth   = chartWidth - labelWidth - valueWidth
	rowHeight   = 26.0
	barHeight   = 16.0
	axisHeight  = 22.0
	chartMargin = 6.0
)

var phaseColors = map[phase.Name]string{
	phase.QueueWait:    "#9c9c9c",
	phase.ArtifactLoad: "#8c6d31",
	phase.Compile:      "#d62728",
	phase.Instantiate:  "#ff7f0e",
	phase.Startup:      "#e7ba52",
	phase.Run:          "#1f77b4",
	phase.Teardown:     "#17becf",
}

// extraColors color phases outside the shared vocabulary, in row order.
var extraColors = []string{"#9467bd", "#2ca02c", "#e377c2", "#7f7f7f", "#bcbd22", "#8c564b"}

type htmlPage struct {
	R         *Report
	Shape     string // "12 workloads × 5 columns"
	Started   string
	Wall      string
	Legend    []htmlLegend
	Summary   []htmlSummaryRow
	Geomean   []string
	Workloads []htmlWorkload
}

type htmlLegend struct{ Name, Color string }

type htmlSummaryRow struct {
	Name, ID string
	Cells    []string
}

type htmlWorkload struct {
	Name      string
	ID        string
	Waterfall htmlChart
	Bars      htmlChart
	Rows      []htmlSummaryRow // phase table: phase name, then a cell per column
	Columns   []string
}

type htmlChart struct {
	Width, Height float64
	PlotX         float64
	Ticks         []htmlTick
	Rows          []htmlRow
	AxisY         float64
	Caption       string
}

type htmlTick struct {
	X     float64
	Label string
}

type htmlRow struct {
	Label   string
	Y       float64 // bar top
	TextY   float64 // label baseline
	Segs    []htmlSeg
	Whisker *htmlWhisker
	ValueX  float64
	Value   string
}

type htmlSeg struct {
	Class, Phase, Color, Title string
	X, W                       float64
}

type htmlWhisker struct{ X1, X2, Y float64 }

func (r *Report) htmlPage() htmlPage {
	p := htmlPage{
		R:       r,
		Shape:   plural(len(r.Workloads), "workload") + " × " + plural(len(r.Columns), "column"),
		Started: r.Started.Format(time.RFC3339),
		Wall:    time.Duration(r.WallNs).Round(time.Second / 10).String(),
	}
	colors := map[phase.Name]string{}
	for i, name := range r.Phases {
		c, ok := phaseColors[name]
		if !ok {
			c = extraColors[i%len(extraColors)]
		}
		colors[name] = c
		p.Legend = append(p.Legend, htmlLegend{Name: string(name), Color: c})
	}
	for _, wr := range r.Workloads {
		row := htmlSummaryRow{Name: wr.Name, ID: workloadID(wr.Name)}
		for _, c := range wr.Cells {
			cell := formatDuration(c.Total.Median())
			if c.Ratio > 0 {
				cell += " (" + formatRatio(c.Ratio) + ")"
			}
			row.Cells = append(row.Cells, cell)
		}
		p.Summary = append(p.Summary, row)
		p.Workloads = append(p.Workloads, r.htmlWorkload(wr, colors))
	}
	if r.hasRatios() {
		for _, s := range r.Summary {
			p.Geomean = append(p.Geomean, formatRatio(s.GeomeanRatio))
		}
	}
	return p
}

func (r *Report) htmlWorkload(wr WorkloadResult, colors map[phase.Name]string) htmlWorkload {
	hw := htmlWorkload{Name: wr.Name, ID: workloadID(wr.Name)}
	for _, c := range wr.Cells {
		hw.Columns = append(hw.Columns, c.Column)
	}
	for _, name := range r.Phases {
		row := htmlSummaryRow{Name: string(name)}
		for _, c := range wr.Cells {
			cell := noValue
			if ps, ok := c.Phase(name); ok {
				cell = medianP90(ps.Stat)
			}
			row.Cells = append(row.Cells, cell)
		}
		hw.Rows = append(hw.Rows, row)
	}
	total := htmlSummaryRow{Name: "total"}
	for _, c := range wr.Cells {
		total.Cells = append(total.Cells, medianP90(c.Total))
	}
	hw.Rows = append(hw.Rows, total)
	if r.hasRatios() {
		ratio := htmlSummaryRow{Name: "× " + r.Baseline}
		for _, c := range wr.Cells {
			ratio.Cells = append(ratio.Cells, formatRatio(c.Ratio))
		}
		hw.Rows = append(hw.Rows, ratio)
	}
	hw.Waterfall = waterfall(wr, colors)
	hw.Bars = totalsChart(wr, r.Baseline)
	return hw
}

// workloadID is the HTML id of a workload's section.
func workloadID(name string) string {
	return "w-" + strings.Map(idRune, name)
}

func idRune(r rune) rune {
	if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
		return r
	}
	return '-'
}

func newChart(rows int, caption string) htmlChart {
	return htmlChart{
		Width:   chartWidth,
		Height:  axisHeight + float64(rows)*rowHeight + chartMargin,
		PlotX:   labelWidth,
		AxisY:   axisHeight - 4,
		Caption: caption,
	}
}

func rowAt(i int, label string) htmlRow {
	top := axisHeight + float64(i)*rowHeight + (rowHeight-barHeight)/2
	return htmlRow{Label: label, Y: top, TextY: top + barHeight - 4}
}

// waterfall stacks each column's phase medians on a linear axis.
func waterfall(wr WorkloadResult, colors map[phase.Name]string) htmlChart {
	ch := newChart(len(wr.Cells), "phases, median of each, stacked (linear time)")
	var longest int64
	for _, c := range wr.Cells {
		var sum int64
		for _, p := range c.Phases {
			sum += p.MedianNs
		}
		longest = max(longest, sum)
	}
	scale, ticks := linearAxis(longest)
	ch.Ticks = ticks
	for i, c := range wr.Cells {
		row := rowAt(i, c.Column)
		x := 0.0
		for _, p := range c.Phases {
			w := float64(p.MedianNs) * scale
			title := fmt.Sprintf("%s · %s: median %s, p90 %s", c.Column, p.Name, formatDuration(p.Median()), formatDuration(p.P90()))
			if p.Detail != "" {
				title += " (" + p.Detail + ")"
			}
			row.Segs = append(row.Segs, htmlSeg{
				Class: "seg", Phase: string(p.Name), Color: colors[p.Name], Title: title,
				X: labelWidth + x, W: w,
			})
			x += w
		}
		row.ValueX = labelWidth + x + 6
		row.Value = formatDuration(c.Total.Median())
		ch.Rows = append(ch.Rows, row)
	}
	return ch
}

// linearAxis returns the scale (units per nanosecond) fitting longest into
// the plot and ticks at a round step.
func linearAxis(longest int64) (float64, []htmlTick) {
	if longest <= 0 {
		longest = 1
	}
	raw := float64(longest) / 4
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	step := pow * 10
	for _, m := range []float64{1, 2, 5} {
		if m*pow >= raw {
			step = m * pow
			break
		}
	}
	top := math.Ceil(float64(longest)/step) * step
	scale := plotWidth / top
	var ticks []htmlTick
	for v := 0.0; v <= top*(1+1e-9); v += step {
		label := "0"
		if v > 0 {
			label = formatDuration(time.Duration(v))
		}
		ticks = append(ticks, htmlTick{X: labelWidth + v*scale, Label: label})
	}
	return scale, ticks
}

// totalsChart draws each column's median total as a bar with a whisker to
// its p90, on a logarithmic axis.
func totalsChart(wr WorkloadResult, baseline string) htmlChart {
	ch := newChart(len(wr.Cells), "total per run: median, whisker to p90 (log scale)")
	lo, hi := math.Inf(1), 0.0
	for _, c := range wr.Cells {
		lo = math.Min(lo, float64(max(c.Total.MedianNs, 1)))
		hi = math.Max(hi, float64(max(c.Total.P90Ns, c.Total.MedianNs, 1)))
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	loExp := math.Floor(math.Log10(lo))
	hiExp := math.Ceil(math.Log10(hi))
	if hiExp <= loExp {
		hiExp = loExp + 1
	}
	x := func(ns int64) float64 {
		v := math.Log10(float64(max(ns, 1)))
		return labelWidth + plotWidth*(v-loExp)/(hiExp-loExp)
	}
	for e := loExp; e <= hiExp; e++ {
		ch.Ticks = append(ch.Ticks, htmlTick{X: x(int64(math.Pow(10, e))), Label: formatDuration(time.Duration(math.Pow(10, e)))})
	}
	for i, c := range wr.Cells {
		row := rowAt(i, c.Column)
		end := x(c.Total.MedianNs)
		title := fmt.Sprintf("%s total: median %s, p90 %s, %d runs", c.Column, formatDuration(c.Total.Median()), formatDuration(c.Total.P90()), c.Runs)
		if c.Ratio > 0 {
			title += fmt.Sprintf(", %s %s", formatRatio(c.Ratio), baseline)
		}
		row.Segs = []htmlSeg{{Class: "bar", Color: "#4e79a7", Title: title, X: labelWidth, W: end - labelWidth}}
		if c.Column == baseline {
			row.Segs[0].Color = "#59a14f"
		}
		p90 := x(c.Total.P90Ns)
		row.Whisker = &htmlWhisker{X1: end, X2: p90, Y: row.Y + barHeight/2}
		row.ValueX = max(end, p90) + 6
		row.Value = formatDuration(c.Total.Median())
		if c.Ratio > 0 {
			row.Value += " · " + formatRatio(c.Ratio)
		}
		ch.Rows = append(ch.Rows, row)
	}
	return ch
}

var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"f": func(v float64) string { return fmt.Sprintf("%.1f", v) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>kindling bench: cold starts, phase by phase</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 24px auto; max-width: 1140px; padding: 0 16px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 3px; }
.meta { color: #555; margin: 0 0 12px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #ccc; }
th.about, td.about { text-align: left; white-space: normal; color: #555; }
tr.total td { font-weight: 600; border-top: 1px solid #bbb; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; margin: 6px 0; }
.legend span { display: inline-flex; align-items: center; gap: 5px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; }
.charts { display: flex; flex-wrap: wrap; gap: 8px 24px; }
figure { margin: 0; }
figcaption { color: #555; font-size: 12px; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg .tick line { stroke: #e4e4e4; }
svg .tick text { fill: #777; text-anchor: middle; }
svg .whisker { stroke: #222; stroke-width: 1.5; }
.notes { color: #8a4b00; }
details summary { cursor: pointer; color: #444; }
</style>
</head>
<body>
<h1>kindling bench: cold starts, phase by phase</h1>
<p class="meta">{{.Shape}} · {{.R.Host}} · {{.R.MemoryMB}} MiB per instance · started {{.Started}} · wall time {{.Wall}}</p>
<table class="columns">
<thead><tr><th>column</th><th>runs</th><th class="about">what one run measures</th></tr></thead>
<tbody>{{range .R.Columns}}<tr><td>{{.Name}}</td><td>{{.Runs}}{{if .Warmup}} (+{{.Warmup}} warm-up){{end}}</td><td class="about">{{.About}}</td></tr>
{{end}}</tbody>
</table>
{{with .R.Notes}}<ul class="notes">{{range .}}<li>{{.}}</li>{{end}}</ul>{{end}}
<div class="legend">{{range .Legend}}<span><i style="background: {{.Color}}"></i>{{.Name}}</span>{{end}}</div>

<h2>Summary: median total per run{{if .Geomean}} (× {{.R.Baseline}}){{end}}</h2>
<table class="summary">
<thead><tr><th>workload</th>{{range .R.Columns}}<th>{{.Name}}</th>{{end}}</tr></thead>
<tbody>{{range .Summary}}<tr><td><a href="#{{.ID}}">{{.Name}}</a></td>{{range .Cells}}<td>{{.}}</td>{{end}}</tr>
{{end}}{{with .Geomean}}<tr class="total"><td>geomean</td>{{range .}}<td>{{.}}</td>{{end}}</tr>{{end}}</tbody>
</table>
{{range .Workloads}}
<section class="workload" id="{{.ID}}">
<h2>{{.Name}}</h2>
<div class="charts">
{{template "chart" .Waterfall}}
{{template "chart" .Bars}}
</div>
<details open><summary>phase table: median (p90)</summary>
<table class="phases">
<thead><tr><th>phase</th>{{range .Columns}}<th>{{.}}</th>{{end}}</tr></thead>
<tbody>{{range .Rows}}<tr{{if eq .Name "total"}} class="total"{{end}}><td>{{.Name}}</td>{{range .Cells}}<td>{{.}}</td>{{end}}</tr>
{{end}}</tbody>
</table>
</details>
</section>
{{end}}
</body>
</html>
{{define "chart"}}<figure>
<figcaption>{{.Caption}}</figcaption>
<svg xmlns="http://www.w3.org/2000/svg" width="{{f .Width}}" height="{{f .Height}}" viewBox="0 0 {{f .Width}} {{f .Height}}" role="img">
<g class="axis">{{range .Ticks}}<g class="tick"><line x1="{{f .X}}" x2="{{f .X}}" y1="{{f $.AxisY}}" y2="{{f $.Height}}"></line><text x="{{f .X}}" y="{{f $.AxisY}}" dy="-3">{{.Label}}</text></g>{{end}}</g>
{{range .Rows}}<g class="row"><text class="label" x="4" y="{{f .TextY}}">{{.Label}}</text>{{$row := .}}{{range .Segs}}<rect class="{{.Class}}"{{if .Phase}} data-phase="{{.Phase}}"{{end}} x="{{f .X}}" y="{{f $row.Y}}" width="{{f .W}}" height="16" fill="{{.Color}}"><title>{{.Title}}</title></rect>{{end}}{{with .Whisker}}<line class="whisker" x1="{{f .X1}}" x2="{{f .X2}}" y1="{{f .Y}}" y2="{{f .Y}}"></line>{{end}}<text class="value" x="{{f .ValueX}}" y="{{f .TextY}}">{{.Value}}</text></g>
{{end}}</svg>
</figure>{{end}}`))
