package scheduler

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
)

// HybridConfig parameterises the hybrid histogram policy of Shahrad et al.,
// "Serverless in the Wild" (USENIX ATC 2020), section 4.2.
//
// Per function, the policy keeps a histogram of idle times (inter-arrival
// gaps) in BinWidth bins up to Range. Idle times are taken at the paper's
// granularity: only the first invocation in a new BinWidth-aligned window
// adds a sample (its gap since the previous invocation), so a function
// called 500 times a minute does not drown its histogram in sub-minute
// gaps, and invocations within one window count as one period of activity.
//
// When the histogram is representative, the head (HeadPercentile, lower
// bin edge, shortened by Margin) is the pre-warm window and the tail
// (TailPercentile, upper bin edge, lengthened by Margin) ends the keep-alive
// window. Both count from the last arrival, as the gaps do (the paper counts
// from the end of the execution; this matters only for long executions).
// With a head of zero an idle instance is simply kept until the tail.
// Otherwise it is kept only until the window of the last arrival ends (the
// continuous-time reading of the paper's "loaded in the minute it was
// invoked"), the function is unloaded, and at the head fresh instances are
// pre-warmed and kept until the tail: as many as were busy at once in the
// last active period, since kindling pools several instances per function
// where the paper models one per application.
//
// The histogram is not trusted, and the policy falls back to a standard
// keep-alive of Fallback with no pre-warming, while it holds fewer than
// MinSamples in-range idle times, when the coefficient of variation of its
// bin counts is below CVThreshold (a flat histogram predicts nothing), or
// when more than MaxOOBFraction of idle times exceed Range. The paper sends
// the last case to an ARIMA forecast; kindling does not implement ARIMA and
// uses the same fallback. The defaults are the paper's as recalled from the
// text (1-minute bins, 4-hour range, 5th/99th percentiles, 10% margin, CV
// threshold 2, fallback keep-alive equal to the range); MinSamples and
// MaxOOBFraction are kindling's choices, the paper gives no number.
type HybridConfig struct {
	BinWidth       time.Duration // histogram bin width (1m)
	Range          time.Duration // histogram range; longer idle times are out of bounds (4h)
	HeadPercentile float64       // pre-warm percentile (5)
	TailPercentile float64       // keep-alive percentile (99)
	Margin         float64       // head shortened and tail lengthened by this fraction (0.1)
	MinSamples     int           // in-range samples needed before the histogram is used (5)
	CVThreshold    float64       // minimum coefficient of variation of bin counts (2)
	MaxOOBFraction float64       // maximum share of out-of-bound idle times (0.5)
	Fallback       time.Duration // standard keep-alive when the histogram is not used (= Range)
}

// DefaultHybridConfig returns the paper's parameters.
func DefaultHybridConfig() HybridConfig {
	return HybridConfig{
		BinWidth:       time.Minute,
		Range:          4 * time.Hour,
		HeadPercentile: 5,
		TailPercentile: 99,
		Margin:         0.10,
		MinSamples:     5,
		CVThreshold:    2,
		MaxOOBFraction: 0.5,
		Fallback:       4 * time.Hour,
	}
}

// NewHybrid returns the hybrid histogram policy.
func NewHybrid(cfg HybridConfig) (Policy, error) {
	switch {
	case cfg.BinWidth <= 0 || cfg.Range < cfg.BinWidth:
		return nil, fmt.Errorf("hybrid policy: need 0 < bin width <= range, got %v and %v: %w", cfg.BinWidth, cfg.Range, errdefs.ErrInvalidArgument)
	case cfg.Range/cfg.BinWidth > 1<<16:
		return nil, fmt.Errorf("hybrid policy: %v/%v is too many bins: %w", cfg.Range, cfg.BinWidth, errdefs.ErrInvalidArgument)
	case !(cfg.HeadPercentile >= 0 && cfg.HeadPercentile <= cfg.TailPercentile && cfg.TailPercentile <= 100):
		return nil, fmt.Errorf("hybrid policy: need 0 <= head <= tail <= 100 percentiles, got %v and %v: %w", cfg.HeadPercentile, cfg.TailPercentile, errdefs.ErrInvalidArgument)
	case !(cfg.Margin >= 0 && cfg.Margin < 1):
		return nil, fmt.Errorf("hybrid policy: margin %v outside [0,1): %w", cfg.Margin, errdefs.ErrInvalidArgument)
	case cfg.MinSamples < 1 || cfg.CVThreshold < 0 || cfg.Fallback < 0 || !(cfg.MaxOOBFraction >= 0 && cfg.MaxOOBFraction <= 1):
		return nil, fmt.Errorf("hybrid policy: need min >= 1, cv >= 0, fallback >= 0, 0 <= oob <= 1: %w", errdefs.ErrInvalidArgument)
	}
	return &hybridPolicy{cfg: cfg, bins: int(cfg.Range / cfg.BinWidth)}, nil
}

type hybridPolicy struct {
	cfg  HybridConfig
	bins int
}

func (p *hybridPolicy) String() string {
	def := DefaultHybridConfig()
	var opts []string
	add := func(differs bool, k string, v any) {
		if differs {
			opts = append(opts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	c := p.cfg
	add(c.BinWidth != def.BinWidth, "bin", formatDuration(c.BinWidth))
	add(c.Range != def.Range, "range", formatDuration(c.Range))
	add(c.HeadPercentile != def.HeadPercentile, "head", c.HeadPercentile)
	add(c.TailPercentile != def.TailPercentile, "tail", c.TailPercentile)
	add(c.Margin != def.Margin, "margin", c.Margin)
	add(c.MinSamples != def.MinSamples, "min", c.MinSamples)
	add(c.CVThreshold != def.CVThreshold, "cv", c.CVThreshold)
	add(c.MaxOOBFraction != def.MaxOOBFraction, "oob", c.MaxOOBFraction)
	add(c.Fallback != def.Fallback, "fallback", formatDuration(c.Fallback))
	if len(opts) == 0 {
		return "hybrid"
	}
	return "hybrid:" + strings.Join(opts, ",")
}

func (p *hybridPolicy) NewTracker(string) Tracker {
	return &hybridTracker{p: p, dirty: true}
}

// hybridTracker is one function's idle-time histogram. The windows are
// recomputed only after a new sample (at most once per bin width), so
// Decide is O(1) on the release path.
type hybridTracker struct {
	p       *hybridPolicy
	counts  []uint32 // allocated on the first sample
	inRange int
	oob     int
	seen    bool
	last    int64 // last arrival, Unix ns (no pointer: no write barrier on the hot path)
	lastBin int64
	dirty   bool
	win     hybridWindows
}

// hybridWindows are the policy's windows, measured from the last arrival.
type hybridWindows struct {
	fallback  bool          // histogram not representative
	preWarm   time.Duration // head, with margin; 0 = no pre-warming
	keepUntil time.Duration // tail, with margin
}

func (t *hybridTracker) OnInvocation(now time.Time) {
	ns := now.UnixNano()
	bin := ns / int64(t.p.cfg.BinWidth)
	if t.seen && bin != t.lastBin {
		t.record(time.Duration(ns - t.last))
	}
	t.seen, t.last, t.lastBin = true, ns, bin
}

func (t *hybridTracker) record(gap time.Duration) {
	b := int(gap / t.p.cfg.BinWidth)
	if gap < 0 {
		b = 0
	}
	if b >= t.p.bins {
		t.oob++
	} else {
		if t.counts == nil {
			t.counts = make([]uint32, t.p.bins)
		}
		t.counts[b]++
		t.inRange++
	}
	t.dirty = true
}

func (t *hybridTracker) Decide(now time.Time) Decision {
	if t.dirty {
		t.win = t.compute()
		t.dirty = false
	}
	w := t.win
	if w.fallback || !t.seen {
		return Decision{KeepAlive: t.p.cfg.Fallback}
	}
	// The windows count from the last arrival, like the gaps they come
	// from; and an instance stays loaded at least until the window of the
	// last arrival ends.
	ns := now.UnixNano()
	since := time.Duration(ns - t.last)
	linger := max(time.Duration((t.lastBin+1)*int64(t.p.cfg.BinWidth)-ns), 0)
	keep := max(w.keepUntil-since, linger)
	if w.preWarm == 0 || w.preWarm-since <= linger {
		return Decision{KeepAlive: keep}
	}
	return Decision{KeepAlive: linger, PreWarm: w.preWarm - since, PreWarmKeepAlive: w.keepUntil - w.preWarm}
}

// cv returns the coefficient of variation of the in-range bin counts.
func (t *hybridTracker) cv() float64 {
	if len(t.counts) == 0 {
		return 0
	}
	n := float64(len(t.counts))
	mean := float64(t.inRange) / n
	if mean == 0 {
		return 0
	}
	var ss float64
	for _, c := range t.counts {
		d := float64(c) - mean
		ss += d * d
	}
	return math.Sqrt(ss/n) / mean
}

func (t *hybridTracker) compute() hybridWindows {
	c := &t.p.cfg
	total := t.inRange + t.oob
	if t.inRange < c.MinSamples || float64(t.oob) > c.MaxOOBFraction*float64(total) || t.cv() < c.CVThreshold {
		return hybridWindows{fallback: true}
	}
	head := time.Duration(t.percentileBin(c.HeadPercentile)) * c.BinWidth
	tail := time.Duration(t.percentileBin(c.TailPercentile)+1) * c.BinWidth
	return hybridWindows{
		preWarm:   time.Duration(float64(head) * (1 - c.Margin)),
		keepUntil: time.Duration(float64(tail) * (1 + c.Margin)),
	}
}

// percentileBin returns the first bin at which the cumulative count reaches
// pct percent of the in-range samples.
func (t *hybridTracker) percentileBin(pct float64) int {
	target := pct / 100 * float64(t.inRange)
	var cum float64
	for i, n := range t.counts {
		cum += float64(n)
		if n > 0 && cum >= target {
			return i
		}
	}
	return len(t.counts) - 1
}
