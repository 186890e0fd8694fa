// Package sim replays invocation traces through the scheduler's own pools
// and policies on virtual time, to compare keep-alive policies on cold
// starts, added latency and memory kept warm.
//
// It is a discrete-event simulation built from the daemon's parts, not a
// model of them: each policy gets a real scheduler.Scheduler driven by a
// scheduler.FakeClock. Invocations are fed in arrival order: the clock is
// advanced to each arrival, firing every timer due before it (request
// completions, keep-alive reaping, pre-warming, finished cold starts), and
// the invocation is acquired with AcquireAsync. A custom Executor turns
// each cold start into a timer StartCost in the future and closes instances
// at once; a granted lease schedules its own Release after the
// invocation's Duration. Nothing sleeps and nothing runs concurrently, so
// a run is deterministic.
package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/internal/quantile"
	"github.com/kindling-dev/kindling/scheduler"
	"github.com/kindling-dev/kindling/trace"
)

// Config describes the simulated node. Zero fields take the defaults in brackets.
type Config struct {
	// MemoryBudgetMB is the node memory [0: unlimited].
	MemoryBudgetMB int
	// StartCost is the virtual time a cold start takes [100ms];
	// StartCosts overrides it per function.
	StartCost  time.Duration
	StartCosts map[string]time.Duration
	// Concurrency, MaxInstances and QueueSize apply to every function as
	// in scheduler.FunctionConfig [1, 0: unlimited, 1<<20].
	Concurrency  int
	MaxInstances int
	QueueSize    int
	// DefaultMemoryMB is used for invocations without memory [128].
	DefaultMemoryMB int
	// Horizon ends the measurement [0: when the last invocation completes].
	Horizon time.Duration
	// Progress, if set, is called every ProgressEvery invocations [100000]
	// and once at the end of each policy's run.
	Progress      func(Progress)
	ProgressEvery int
}

// Progress reports how far a run has got.
type Progress struct {
	Policy      string
	Done, Total int           // invocations fed
	Virtual     time.Duration // virtual time since the start of the trace
}

// Result is one policy's outcome.
type Result struct {
	Policy           string
	Invocations      int           // invocations in the trace
	ColdStarts       int           // leases that waited for a start
	Rejected         int           // invocations refused by the scheduler
	ColdStartRate    float64       // ColdStarts / served invocations
	LatencyP50       time.Duration // added latency (start wait + queueing)
	LatencyP99       time.Duration
	LatencyMax       time.Duration
	IdleMemoryGBs    float64 // memory held by idle instances, GB-seconds
	PeakMemoryMB     int     // most memory held by instances at once
	InstancesStarted int
	PreWarmed        int           // instances started ahead of demand
	Virtual          time.Duration // measured span
}

// Run replays tr, which must be sorted by arrival, once per policy and
// returns one Result per policy, in order.
func Run(ctx context.Context, tr []trace.Invocation, cfg Config, policies ...scheduler.Policy) ([]Result, error) {
	if len(policies) == 0 {
		return nil, fmt.Errorf("simulate: no policies: %w", errdefs.ErrInvalidArgument)
	}
	if !slices.IsSortedFunc(tr, func(a, b trace.Invocation) int { return cmp.Compare(a.Arrival, b.Arrival) }) {
		return nil, fmt.Errorf("simulate: trace not sorted by arrival: %w", errdefs.ErrInvalidArgument)
	}
	cfg.defaults()
	results := make([]Result, 0, len(policies))
	for _, pol := range policies {
		if pol == nil {
			return nil, fmt.Errorf("simulate: nil policy: %w", errdefs.ErrInvalidArgument)
		}
		r, err := runOne(ctx, tr, cfg, pol)
		if err != nil {
			return nil, fmt.Errorf("simulate %s: %w", pol, err)
		}
		results = append(results, r)
	}
	return results, nil
}

func (c *Config) defaults() {
	if c.StartCost <= 0 {
		c.StartCost = 100 * time.Millisecond
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.QueueSize == 0 {
		c.QueueSize = 1 << 20
	}
	if c.DefaultMemoryMB <= 0 {
		c.DefaultMemoryMB = 128
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = 100_000
	}
}

// epoch is the virtual time of the trace's start; minute-aligned, so that
// policies binning by wall-clock minutes see the trace's own minutes.
var epoch = time.Date(2019, 7, 15, 0, 0, 0, 0, time.UTC)

type nopInstance struct{}

func (nopInstance) Close(context.Context) error { return nil }

func runOne(ctx context.Context, tr []trace.Invocation, cfg Config, pol scheduler.Policy) (Result, error) {
	res := Result{Policy: pol.String(), Invocations: len(tr)}
	clock := scheduler.NewFakeClock(epoch)
	m := &meter{last: epoch}
	exec := func(kind scheduler.JobKind, fn string, job func()) {
		if kind != scheduler.JobStart {
			job()
			return
		}
		cost, ok := cfg.StartCosts[fn]
		if !ok {
			cost = cfg.StartCost
		}
		clock.AfterFunc(cost, job)
	}
	s := scheduler.New(scheduler.Options{
		MemoryBudgetMB: cfg.MemoryBudgetMB,
		Clock:          clock,
		DefaultPolicy:  pol,
		Executor:       exec,
		Observer:       m,
	})

	// Register every function once, sized by its largest invocation.
	mem := make(map[string]int)
	var names []string
	var end time.Duration
	for _, inv := range tr {
		mb := inv.MemoryMB
		if mb <= 0 {
			mb = cfg.DefaultMemoryMB
		}
		if old, ok := mem[inv.Function]; !ok {
			names = append(names, inv.Function)
			mem[inv.Function] = mb
		} else if mb > old {
			mem[inv.Function] = mb
		}
		end = max(end, inv.Arrival+inv.Duration)
	}
	if cfg.Horizon > 0 {
		end = cfg.Horizon
	}
	start := func(context.Context) (scheduler.Instance, error) { return nopInstance{}, nil }
	for _, name := range names {
		err := s.Register(scheduler.FunctionConfig{
			Name:         name,
			MemoryMB:     mem[name],
			Concurrency:  cfg.Concurrency,
			MaxInstances: cfg.MaxInstances,
			QueueSize:    cfg.QueueSize,
		}, start)
		if err != nil {
			return res, err
		}
	}

	var (
		latencies = make([]time.Duration, 0, len(tr))
		inflight  int
		firstErr  error
	)
	bg := context.Background() // virtual time: waiting requests never time out
	for i := range tr {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return res, err
			}
		}
		if cfg.Progress != nil && i > 0 && i%cfg.ProgressEvery == 0 {
			cfg.Progress(Progress{Policy: res.Policy, Done: i, Total: len(tr), Virtual: clock.Now().Sub(epoch)})
		}
		inv := &tr[i]
		clock.AdvanceTo(epoch.Add(inv.Arrival))
		arrival := clock.Now()
		inflight++
		s.AcquireAsync(bg, inv.Function, func(l *scheduler.Lease, err error) {
			if err != nil {
				inflight--
				res.Rejected++
				if !errors.Is(err, errdefs.ErrUnavailable) && firstErr == nil {
					firstErr = err
				}
				return
			}
			latencies = append(latencies, clock.Now().Sub(arrival))
			if l.Cold() {
				res.ColdStarts++
			}
			clock.AfterFunc(inv.Duration, func() {
				s.Release(l, true)
				inflight--
			})
		})
		if firstErr != nil {
			return res, firstErr
		}
	}
	// Let every request finish, then measure up to the horizon.
	for inflight > 0 && clock.Step() {
	}
	if inflight > 0 {
		return res, fmt.Errorf("%d invocations never completed", inflight)
	}
	clock.AdvanceTo(epoch.Add(end))
	stop := clock.Now()
	m.finish(stop)
	res.Virtual = stop.Sub(epoch)
	if cfg.Progress != nil {
		cfg.Progress(Progress{Policy: res.Policy, Done: len(tr), Total: len(tr), Virtual: res.Virtual})
	}
	for _, name := range names {
		if st, ok := s.Stats(name); ok {
			res.PreWarmed += int(st.PreWarmed)
		}
	}

	// Drain the remaining timers (keep-alives, pre-warms) so Close finds
	// nothing starting; their effects fall after the measurement.
	for n := 0; n < 1_000_000 && clock.Step(); n++ {
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Close(closeCtx); err != nil {
		return res, fmt.Errorf("close scheduler: %w", err)
	}

	res.IdleMemoryGBs = m.idleMBs / 1024
	res.PeakMemoryMB = int(m.peak)
	res.InstancesStarted = m.started
	if served := len(latencies); served > 0 {
		res.ColdStartRate = float64(res.ColdStarts) / float64(served)
		slices.Sort(latencies)
		res.LatencyP50 = quantile.NearestRank(latencies, 0.50)
		res.LatencyP99 = quantile.NearestRank(latencies, 0.99)
		res.LatencyMax = latencies[served-1]
	}
	return res, nil
}

// meter integrates memory over virtual time from the scheduler's
// transitions; it runs on the simulation's only goroutine.
type meter struct {
	last    time.Time
	done    bool
	idleMB  int64
	heldMB  int64
	idleMBs float64
	peak    int64
	started int
}

func (m *meter) Transition(t scheduler.Transition) {
	if m.done {
		return
	}
	m.advance(t.At)
	mb := int64(t.MemoryMB)
	switch t.From {
	case scheduler.StateNone:
		m.heldMB += mb
		m.started++
	case scheduler.StateIdle:
		m.idleMB -= mb
	}
	switch t.To {
	case scheduler.StateNone:
		m.heldMB -= mb
	case scheduler.StateIdle:
		m.idleMB += mb
	}
}

// advance accounts for the time since the last event. The peak is taken
// over spans of positive length only, so that the zero-length overlap of an
// evicted instance and its replacement (whose start waits for the evicted
// one to close) does not count.
func (m *meter) advance(now time.Time) {
	if now.After(m.last) {
		m.idleMBs += float64(m.idleMB) * now.Sub(m.last).Seconds()
		m.peak = max(m.peak, m.heldMB)
		m.last = now
	}
}

func (m *meter) finish(at time.Time) {
	m.advance(at)
	m.done = true
}

// WriteTable writes results as an aligned text table.
func WriteTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tinvocations\tcold starts\tcold rate\tadded p50\tadded p99\tidle GB-s\tpeak MB\tinstances\tpre-warmed\trejected\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f%%\t%v\t%v\t%.1f\t%d\t%d\t%d\t%d\t\n",
			r.Policy, r.Invocations, r.ColdStarts, 100*r.ColdStartRate,
			roundLatency(r.LatencyP50), roundLatency(r.LatencyP99), r.IdleMemoryGBs, r.PeakMemoryMB,
			r.InstancesStarted, r.PreWarmed, r.Rejected)
	}
	return tw.Flush()
}

// roundLatency keeps a table readable: 63.6ms rather than 63.606679ms.
func roundLatency(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
