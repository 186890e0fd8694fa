package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
)

// Instance is whatever a sandbox started; the pool only needs to close it.
type Instance interface {
	Close(ctx context.Context) error
}

// StartFunc starts one instance of a function: a cold start, typically slow.
// Its context ends when the scheduler closes or Options.StartTimeout passes.
type StartFunc func(ctx context.Context) (Instance, error)

// DefaultQueueSize is the wait-queue bound used when FunctionConfig.QueueSize is 0.
const DefaultQueueSize = 64

// FunctionConfig describes how one function's instances are pooled.
type FunctionConfig struct {
	Name     string
	MemoryMB int // reserved from the node budget per instance; must be > 0
	// Concurrency is the number of requests one instance serves at once (0 means 1).
	Concurrency int
	// MinInstances are kept started at all times; MaxInstances caps the
	// pool (0 means no cap other than the memory budget).
	MinInstances, MaxInstances int
	// QueueSize bounds the requests waiting for a busy instance to come
	// free (0 means DefaultQueueSize, negative means no waiting). Requests
	// waiting for an instance that is starting on their behalf do not count.
	QueueSize int
	// SingleUse instances serve one request and are then discarded. The
	// pool still pre-creates fresh instances ahead of demand as the policy
	// allows, replacing each used instance with a new idle one.
	SingleUse bool
	// Policy decides keep-alive and pre-warming; nil means Options.DefaultPolicy.
	Policy Policy
}

// State is an instance's lifecycle state.
type State uint8

// Instance states. StateNone marks an instance not yet created or already
// closed; it appears only in Transition events.
const (
	StateNone State = iota
	StateStarting
	StateIdle
	StateBusy
	StateStopping
	numStates
)

func (s State) String() string {
	switch s {
	case StateNone:
		return "none"
	case StateStarting:
		return "starting"
	case StateIdle:
		return "idle"
	case StateBusy:
		return "busy"
	case StateStopping:
		return "stopping"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// JobKind says what an Executor job does.
type JobKind uint8

// Job kinds.
const (
	JobStart JobKind = iota + 1 // start an instance (calls the StartFunc)
	JobStop                     // close instances
)

// Executor runs the scheduler's slow jobs outside its locks. It must run
// every job exactly once, now or later, on any goroutine. The default runs
// each job on a new goroutine; the simulator runs starts after a virtual
// start-up delay and stops at once.
type Executor func(kind JobKind, function string, job func())

// Transition reports an instance changing state.
type Transition struct {
	Function string
	Instance uint64 // unique within a Scheduler
	MemoryMB int
	From, To State
	At       time.Time
}

// Observer receives every instance state change, for metrics and the
// simulator. It is called with the function's lock held: it must be quick
// and must not call back into the Scheduler.
type Observer interface {
	Transition(Transition)
}

// Options configures a Scheduler. The zero value is usable.
type Options struct {
	// MemoryBudgetMB is the node memory shared by all instances; 0 means unlimited.
	MemoryBudgetMB int
	// Clock defaults to SystemClock().
	Clock Clock
	// DefaultPolicy applies to functions registered without a Policy;
	// nil means Fixed(DefaultKeepAlive).
	DefaultPolicy Policy
	// Executor defaults to one goroutine per job.
	Executor Executor
	// Observer, if set, sees every instance state change.
	Observer Observer
	// StartTimeout bounds each StartFunc call; 0 means no bound.
	StartTimeout time.Duration
	// StopTimeout bounds each Instance.Close made in the background; 0 means 10s.
	StopTimeout time.Duration
	// Logger receives close failures and the like; nil discards them.
	Logger *slog.Logger
}

// Stats is a snapshot of one function's pool.
type Stats struct {
	Starting, Idle, Busy, Stopping int // instances by state
	Queued                         int // requests waiting
	MemoryMB                       int // memory held by the function's instances

	Acquired      uint64 // leases granted
	ColdStarts    uint64 // leases that waited for their instance to start
	Started       uint64 // instances started successfully
	StartFailures uint64 // StartFunc errors
	PreWarmed     uint64 // instances started ahead of demand by the policy
	Reaped        uint64 // idle instances closed by the keep-alive policy
	Evicted       uint64 // idle instances closed to make room for other functions
	Rejected      uint64 // Acquire calls refused with ErrUnavailable
	Unhealthy     uint64 // instances released as unhealthy
}

// Scheduler pools instances of many functions on one node. It is safe for
// concurrent use.
type Scheduler struct {
	clock        Clock
	policy       Policy
	exec         Executor
	obs          Observer
	log          *slog.Logger
	startTimeout time.Duration
	stopTimeout  time.Duration

	budget budget
	pools  sync.Map // function name -> *pool
	regMu  sync.Mutex
	closed atomic.Bool
	ids    atomic.Uint64
	live   sync.WaitGroup // one count per instance not yet closed

	baseCtx context.Context
	cancel  context.CancelFunc
}

// New returns a Scheduler.
func New(opts Options) *Scheduler {
	s := &Scheduler{
		clock:        opts.Clock,
		policy:       opts.DefaultPolicy,
		exec:         opts.Executor,
		obs:          opts.Observer,
		log:          opts.Logger,
		startTimeout: opts.StartTimeout,
		stopTimeout:  opts.StopTimeout,
	}
	if s.clock == nil {
		s.clock = SystemClock()
	}
	if s.policy == nil {
		s.policy = Fixed(DefaultKeepAlive)
	}
	if s.exec == nil {
		s.exec = func(_ JobKind, _ string, job func()) { go job() }
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.stopTimeout <= 0 {
		s.stopTimeout = 10 * time.Second
	}
	s.budget.limit = math.MaxInt64
	if opts.MemoryBudgetMB > 0 {
		s.budget.limit = int64(opts.MemoryBudgetMB)
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	return s
}

var errClosed = fmt.Errorf("scheduler closed: %w", errdefs.ErrUnavailable)

// Register adds a function, or replaces it: the old version's idle
// instances are closed, its busy ones are closed when released, and its
// waiting requests fail with a retryable ErrUnavailable. The policy's
// history is kept across a replacement when the policy is unchanged.
func (s *Scheduler) Register(cfg FunctionConfig, start StartFunc) error {
	if start == nil {
		return fmt.Errorf("register %q: nil StartFunc: %w", cfg.Name, errdefs.ErrInvalidArgument)
	}
	cfg, err := s.normalize(cfg)
	if err != nil {
		return err
	}
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if s.closed.Load() {
		return fmt.Errorf("register %q: %w", cfg.Name, errClosed)
	}
	p := newPool(s, cfg, start)
	var old effects
	if v, ok := s.pools.Load(cfg.Name); ok {
		o := v.(*pool)
		o.mu.Lock()
		if o.cfg.Policy.String() == cfg.Policy.String() {
			p.tracker = o.tracker
		}
		// Publish the new pool before closing the old one, both under the
		// old pool's lock, so that an Acquire that finds the old pool
		// closed always finds the new one on its next lookup.
		s.pools.Store(cfg.Name, p)
		replaced := &errdefs.RetryableError{
			Err:        fmt.Errorf("function %q was replaced while the request waited: %w", cfg.Name, errdefs.ErrUnavailable),
			RetryAfter: 100 * time.Millisecond,
		}
		o.shutdownLocked(s.clock.Now(), replaced, &old)
		o.mu.Unlock()
	} else {
		s.pools.Store(cfg.Name, p)
	}
	var e effects
	p.mu.Lock()
	p.ensureMinLocked(s.clock.Now(), &e)
	p.mu.Unlock()
	s.run(&old)
	s.run(&e)
	return nil
}

func (s *Scheduler) normalize(cfg FunctionConfig) (FunctionConfig, error) {
	bad := func(format string, args ...any) (FunctionConfig, error) {
		return cfg, fmt.Errorf("register %q: %s: %w", cfg.Name, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
	}
	switch {
	case cfg.Name == "":
		return bad("empty function name")
	case cfg.MemoryMB <= 0:
		return bad("memory %d MB must be positive", cfg.MemoryMB)
	case int64(cfg.MemoryMB) > s.budget.limit:
		return bad("memory %d MB exceeds the node budget of %d MB", cfg.MemoryMB, s.budget.limit)
	case cfg.Concurrency < 0:
		return bad("negative concurrency %d", cfg.Concurrency)
	case cfg.SingleUse && cfg.Concurrency > 1:
		return bad("single-use instances cannot have concurrency %d", cfg.Concurrency)
	case cfg.MinInstances < 0 || cfg.MaxInstances < 0:
		return bad("negative instance bounds %d..%d", cfg.MinInstances, cfg.MaxInstances)
	case cfg.MaxInstances > 0 && cfg.MinInstances > cfg.MaxInstances:
		return bad("min instances %d above max %d", cfg.MinInstances, cfg.MaxInstances)
	case int64(cfg.MinInstances)*int64(cfg.MemoryMB) > s.budget.limit:
		return bad("%d min instances of %d MB exceed the node budget of %d MB", cfg.MinInstances, cfg.MemoryMB, s.budget.limit)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Policy == nil {
		cfg.Policy = s.policy
	}
	return cfg, nil
}

// Unregister removes a function: its waiting requests fail with
// ErrNotFound, its idle instances are closed before Unregister returns
// (within ctx), and its busy instances are closed when released.
func (s *Scheduler) Unregister(ctx context.Context, name string) error {
	s.regMu.Lock()
	v, ok := s.pools.LoadAndDelete(name)
	s.regMu.Unlock()
	if !ok {
		return fmt.Errorf("unregister %q: %w", name, errdefs.ErrNotFound)
	}
	gone := fmt.Errorf("function %q was unregistered: %w", name, errdefs.ErrNotFound)
	if err := v.(*pool).shutdown(ctx, gone); err != nil {
		return fmt.Errorf("unregister %q: %w", name, err)
	}
	return nil
}

// Close unregisters every function, fails waiting requests, aborts starts
// in flight and waits, within ctx, until every instance is closed; busy
// instances are closed when their leases are released. Close is idempotent.
func (s *Scheduler) Close(ctx context.Context) error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	s.regMu.Lock()
	var pools []*pool
	s.pools.Range(func(k, v any) bool {
		s.pools.Delete(k)
		pools = append(pools, v.(*pool))
		return true
	})
	s.regMu.Unlock()
	var errs []error
	for _, p := range pools {
		errs = append(errs, p.shutdown(ctx, errClosed))
	}
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.live.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done(): // the waiting goroutine ends when the last instance closes
		errs = append(errs, fmt.Errorf("close scheduler: instances still busy or starting: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// Stats returns a snapshot of a function's pool.
func (s *Scheduler) Stats(name string) (Stats, bool) {
	v, ok := s.pools.Load(name)
	if !ok {
		return Stats{}, false
	}
	p := v.(*pool)
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	st.Starting = p.counts[StateStarting]
	st.Idle = p.counts[StateIdle]
	st.Busy = p.counts[StateBusy]
	st.Stopping = p.counts[StateStopping]
	st.Queued = p.waiters.n
	st.MemoryMB = int(p.memMB)
	return st, true
}

// MemoryUsedMB returns the memory reserved by all instances on the node.
func (s *Scheduler) MemoryUsedMB() int { return int(s.budget.used.Load()) }

func (s *Scheduler) lookup(name string) (*pool, error) {
	v, ok := s.pools.Load(name)
	if !ok {
		return nil, fmt.Errorf("function %q: %w", name, errdefs.ErrNotFound)
	}
	return v.(*pool), nil
}

// Lease is one request's hold on an instance, returned by Acquire and
// given back with Release.
type Lease struct {
	p         *pool
	in        *instance
	inst      Instance
	cold      bool
	queueWait time.Duration
	startDur  time.Duration
	granted   time.Time
	released  bool // guarded by p.mu
}

// Instance returns the leased instance.
func (l *Lease) Instance() Instance { return l.inst }

// Function returns the function's name.
func (l *Lease) Function() string { return l.p.name }

// InstanceID identifies the leased instance, uniquely within the Scheduler.
func (l *Lease) InstanceID() uint64 { return l.in.id }

// Cold reports whether the request waited for its instance to start.
func (l *Lease) Cold() bool { return l.cold }

// QueueWait is the time from Acquire to the lease, including any start.
func (l *Lease) QueueWait() time.Duration { return l.queueWait }

// StartDuration is how long the instance took to start, for cold leases.
func (l *Lease) StartDuration() time.Duration { return l.startDur }

// Acquire returns a lease on an instance of the named function, starting
// or waiting for one as needed; see the package documentation. Errors wrap
// errdefs.ErrNotFound for unknown functions, an *errdefs.RetryableError
// around errdefs.ErrUnavailable for back-pressure, the StartFunc's error
// when the start made for this request fails, and ctx.Err() when ctx ends
// while waiting.
func (s *Scheduler) Acquire(ctx context.Context, name string) (*Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("acquire %q: %w", name, err)
	}
	l, w, err := s.admit(name, func() *waiter { return &waiter{ch: make(chan result, 1)} })
	if l != nil || err != nil {
		return l, err
	}
	select {
	case r := <-w.ch:
		return r.l, r.err
	case <-ctx.Done():
		if !w.p.cancel(w) {
			// A lease or error is already on its way: take it and give it back.
			if r := <-w.ch; r.l != nil {
				s.Release(r.l, true)
			}
		}
		return nil, fmt.Errorf("acquire %q: gave up after waiting %v: %w", name, s.clock.Now().Sub(w.enq), ctx.Err())
	}
}

// AcquireAsync is Acquire without blocking: done is called exactly once
// with the lease or error, possibly before AcquireAsync returns and
// possibly on another goroutine. done must not block.
func (s *Scheduler) AcquireAsync(ctx context.Context, name string, done func(*Lease, error)) {
	if err := ctx.Err(); err != nil {
		done(nil, fmt.Errorf("acquire %q: %w", name, err))
		return
	}
	l, w, err := s.admit(name, func() *waiter { return &waiter{fn: done} })
	if l != nil || err != nil {
		done(l, err)
		return
	}
	if ctx.Done() == nil {
		return
	}
	p := w.p
	p.mu.Lock()
	if w.queued {
		w.stop = context.AfterFunc(ctx, func() {
			if p.cancel(w) {
				done(nil, fmt.Errorf("acquire %q: gave up after waiting %v: %w", name, s.clock.Now().Sub(w.enq), ctx.Err()))
			}
		})
	}
	p.mu.Unlock()
}

// Release gives a lease back. An unhealthy instance is closed instead of
// reused. Releasing a lease twice is a no-op.
func (s *Scheduler) Release(l *Lease, healthy bool) {
	if l == nil {
		return
	}
	p, in := l.p, l.in
	var e effects
	p.mu.Lock()
	if l.released {
		p.mu.Unlock()
		return
	}
	l.released = true
	now := s.clock.Now()
	in.inflight--
	p.svc += (now.Sub(l.granted) - p.svc) / 8
	switch {
	case !healthy || p.cfg.SingleUse || p.closed || in.retire:
		in.retire = true
		p.avail.remove(in)
		if !healthy {
			p.stats.Unhealthy++
		}
		if in.inflight == 0 {
			p.stopLocked(in, now, &e)
		}
		if healthy && p.cfg.SingleUse && !p.closed {
			p.replaceSingleUseLocked(now, &e)
		}
	case p.waiters.n > 0:
		w := p.waiters.popFront()
		e.deliver(w, p.grantLocked(in, now, w.enq, false), nil)
	case in.inflight == 0:
		p.idleLocked(in, now, &e)
	default: // still serving others, but has a free slot again
		p.avail.moveToFront(in)
	}
	p.mu.Unlock()
	s.run(&e)
}

// budget is the node's memory, shared lock-free by all pools.
type budget struct {
	limit      int64
	used       atomic.Int64
	violations atomic.Int64 // releases that drove used below zero: must stay 0
}

func (b *budget) tryReserve(mb int64) bool {
	for {
		u := b.used.Load()
		if u+mb > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+mb) {
			return true
		}
	}
}

func (b *budget) release(mb int64) {
	if mb <= 0 {
		return
	}
	if b.used.Add(-mb) < 0 {
		b.violations.Add(1)
	}
}
