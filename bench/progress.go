package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress reports a run's progress: a line per run, or one line redrawn in
// place (bar) when the output is a terminal.
type progress struct {
	w           io.Writer
	bar         bool
	total, done int
	start       time.Time
	drawn       bool // a bar line is on screen
}

func newProgress(w io.Writer, bar bool, total int) *progress {
	return &progress{w: w, bar: bar, total: total, start: time.Now()}
}

// note reports a step that is not a run.
func (p *progress) note(msg string) {
	if p.w == nil {
		return
	}
	if p.bar {
		p.draw(msg)
		return
	}
	fmt.Fprintf(p.w, "bench: %s\n", msg)
}

// run reports a finished run; run 0 is a warm-up.
func (p *progress) run(workload, column string, run, runs int, total time.Duration) {
	p.done++
	if p.w == nil {
		return
	}
	what := fmt.Sprintf("run %d/%d", run, runs)
	if run == 0 {
		what = "warm-up"
	}
	msg := fmt.Sprintf("%s · %s · %s · %s", workload, column, what, formatDuration(total))
	if p.bar {
		p.draw(msg)
		return
	}
	fmt.Fprintf(p.w, "bench: [%*d/%d] %s\n", len(fmt.Sprint(p.total)), p.done, p.total, msg)
}

func (p *progress) draw(msg string) {
	const width = 24
	filled := 0
	if p.total > 0 {
		filled = width * p.done / p.total
	}
	// Runs differ in cost by orders of magnitude, so no time left is
	// guessed: the bar shows the time spent.
	fmt.Fprintf(p.w, "\r\033[K[%s%s] %d/%d runs, %s  %s", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		p.done, p.total, time.Since(p.start).Round(time.Second), msg)
	p.drawn = true
}

// finish ends the bar's line.
func (p *progress) finish() {
	if p.w != nil && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}
