package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
)

// pool is one function's instances and wait queue, guarded by mu.
type pool struct {
	s     *Scheduler
	name  string
	cfg   FunctionConfig
	start StartFunc
	slots int   // requests per instance
	mb    int64 // memory per instance
	qcap  int   // queue bound (0 = no waiting)

	mu      sync.Mutex
	tracker Tracker
	avail   instList // instances with a free slot, most recently used first
	waiters waitList
	counts  [numStates]int
	memMB   int64
	closed  bool
	svc     time.Duration // moving average of lease hold times, for Retry-After
	// peakBusy is the most instances busy at once since the last pre-warm.
	peakBusy int
	stats    Stats

	reapTimer Timer
	reapAt    time.Time
	reapGen   uint64
	warmTimer Timer
	warmGen   uint64
}

type instance struct {
	id        uint64
	p         *pool
	inst      Instance
	state     State
	inflight  int
	served    int
	reserved  int64 // MB held in the budget, released exactly once (or handed over on eviction)
	created   time.Time
	startDur  time.Duration
	idleSince time.Time
	expires   time.Time     // keep-alive deadline while idle
	warmKeep  time.Duration // > 0 for a pre-warmed instance: keep-alive once ready
	retire    bool          // close when the last request returns

	prev, next *instance
	listed     bool
}

type waiter struct {
	enq    time.Time
	ch     chan result         // Acquire
	fn     func(*Lease, error) // AcquireAsync
	stop   func() bool         // unregisters AcquireAsync's context.AfterFunc
	p      *pool
	queued bool

	prev, next *waiter
}

type result struct {
	l   *Lease
	err error
}

func (w *waiter) deliver(l *Lease, err error) {
	if w.stop != nil {
		w.stop()
	}
	if w.ch != nil {
		w.ch <- result{l, err}
		return
	}
	w.fn(l, err)
}

// effects collects what a locked section decided to do once unlocked.
type effects struct {
	deliveries []delivery
	starts     []startJob
	stops      []*instance
}

type delivery struct {
	w   *waiter
	l   *Lease
	err error
}

type startJob struct {
	in      *instance
	victims []*instance // evicted instances to close first
	surplus int64       // MB of the victims' reservations beyond what in needs
}

func (e *effects) deliver(w *waiter, l *Lease, err error) {
	e.deliveries = append(e.deliveries, delivery{w, l, err})
}

// run carries out effects; the caller must hold no lock.
func (s *Scheduler) run(e *effects) {
	for _, d := range e.deliveries {
		d.w.deliver(d.l, d.err)
	}
	for _, j := range e.starts {
		s.launch(j)
	}
	for _, in := range e.stops {
		s.exec(JobStop, in.p.name, func() { in.p.closeInstance(context.Background(), in) })
	}
}

// launch closes a start's eviction victims, then starts its instance.
func (s *Scheduler) launch(j startJob) {
	p := j.in.p
	start := func() { s.exec(JobStart, p.name, func() { p.runStart(j.in) }) }
	if len(j.victims) == 0 && j.surplus == 0 {
		start()
		return
	}
	s.exec(JobStop, p.name, func() {
		for _, v := range j.victims {
			v.p.closeInstance(context.Background(), v)
		}
		s.budget.release(j.surplus)
		start()
	})
}

func newPool(s *Scheduler, cfg FunctionConfig, start StartFunc) *pool {
	p := &pool{
		s:     s,
		name:  cfg.Name,
		cfg:   cfg,
		start: start,
		slots: cfg.Concurrency,
		mb:    int64(cfg.MemoryMB),
		qcap:  max(cfg.QueueSize, 0),
	}
	p.tracker = cfg.Policy.NewTracker(cfg.Name)
	return p
}

func (p *pool) liveLocked() int {
	return p.counts[StateStarting] + p.counts[StateIdle] + p.counts[StateBusy]
}

// startingSlotsLocked is how many queued requests the instances now
// starting will serve.
func (p *pool) startingSlotsLocked() int { return p.counts[StateStarting] * p.slots }

func (p *pool) canGrowLocked() bool {
	return !p.closed && (p.cfg.MaxInstances == 0 || p.liveLocked() < p.cfg.MaxInstances)
}

func (p *pool) setState(in *instance, to State, now time.Time) {
	from := in.state
	if from == to {
		return
	}
	if from != StateNone {
		p.counts[from]--
	}
	if to != StateNone {
		p.counts[to]++
	}
	in.state = to
	if p.s.obs != nil {
		p.s.obs.Transition(Transition{Function: p.name, Instance: in.id, MemoryMB: int(p.mb), From: from, To: to, At: now})
	}
}

func (p *pool) newInstanceLocked(now time.Time) *instance {
	in := &instance{id: p.s.ids.Add(1), p: p, reserved: p.mb, created: now}
	p.memMB += p.mb
	p.s.live.Add(1)
	p.setState(in, StateStarting, now)
	return in
}

func (p *pool) grantLocked(in *instance, now, enq time.Time, cold bool) *Lease {
	in.inflight++
	in.served++
	p.setState(in, StateBusy, now)
	p.peakBusy = max(p.peakBusy, p.counts[StateBusy])
	if in.inflight >= p.slots {
		p.avail.remove(in)
	}
	p.stats.Acquired++
	l := &Lease{p: p, in: in, inst: in.inst, cold: cold, granted: now, queueWait: now.Sub(enq)}
	if cold {
		p.stats.ColdStarts++
		l.startDur = in.startDur
	}
	return l
}

func (p *pool) enqueueLocked(w *waiter) {
	w.p = p
	p.waiters.pushBack(w)
}

func (p *pool) rejectLocked(reason string) error {
	p.stats.Rejected++
	retry := min(max(p.svc, 100*time.Millisecond), 30*time.Second)
	return &errdefs.RetryableError{
		Err:        fmt.Errorf("function %q: %s: %w", p.name, reason, errdefs.ErrUnavailable),
		RetryAfter: retry,
	}
}

// reservation is memory taken over from evicted instances of other functions.
type reservation struct {
	victims []*instance
	credit  int64
	races   int
}

// giveBack closes victims that were not needed after all and frees their memory.
func (r *reservation) giveBack(s *Scheduler) {
	if len(r.victims) == 0 {
		return
	}
	victims, credit := r.victims, r.credit
	*r = reservation{}
	s.exec(JobStop, "", func() {
		for _, v := range victims {
			v.p.closeInstance(context.Background(), v)
		}
		s.budget.release(credit)
	})
}

// admit serves a request at once, queues it (returning its waiter, made by
// newWaiter), or refuses it.
func (s *Scheduler) admit(name string, newWaiter func() *waiter) (*Lease, *waiter, error) {
	var (
		res       reservation
		w         *waiter
		enq       time.Time
		first     = true
		exhausted = false
	)
	for {
		if s.closed.Load() {
			res.giveBack(s)
			return nil, nil, fmt.Errorf("acquire %q: %w", name, errClosed)
		}
		p, err := s.lookup(name)
		if err != nil {
			res.giveBack(s)
			return nil, nil, fmt.Errorf("acquire: %w", err)
		}
		p.mu.Lock()
		if p.closed { // replaced or unregistered just now: look again
			p.mu.Unlock()
			continue
		}
		now := s.clock.Now()
		if first {
			first, enq = false, now
			p.tracker.OnInvocation(now)
		}
		if in := p.avail.head; in != nil {
			l := p.grantLocked(in, now, enq, false)
			p.mu.Unlock()
			res.giveBack(s)
			return l, nil, nil
		}
		if w == nil {
			w = newWaiter()
		}
		w.enq = enq
		if p.waiters.n < p.startingSlotsLocked() { // an instance already starting will serve it
			p.enqueueLocked(w)
			p.mu.Unlock()
			res.giveBack(s)
			return nil, w, nil
		}
		if p.canGrowLocked() {
			need := p.mb - res.credit
			if need <= 0 || s.budget.tryReserve(need) {
				j := startJob{in: p.newInstanceLocked(now), victims: res.victims, surplus: max(-need, 0)}
				res = reservation{}
				p.enqueueLocked(w)
				p.mu.Unlock()
				s.launch(j)
				return nil, w, nil
			}
			if !exhausted {
				p.mu.Unlock()
				exhausted = !s.evictOne(p, &res)
				continue
			}
		}
		uncovered := p.waiters.n - p.startingSlotsLocked()
		switch {
		case uncovered >= p.qcap:
			err = p.rejectLocked(fmt.Sprintf("queue full (%d waiting)", uncovered))
		case p.liveLocked() == 0:
			err = p.rejectLocked(fmt.Sprintf("node memory budget exhausted (%d of %d MB reserved, nothing idle to evict)",
				s.budget.used.Load(), s.budget.limit))
		default:
			p.enqueueLocked(w)
		}
		p.mu.Unlock()
		res.giveBack(s)
		if err != nil {
			return nil, nil, err
		}
		return nil, w, nil
	}
}

// cancel removes a waiter whose caller gave up; false means it was already
// served (or failed) and its result is being delivered.
func (p *pool) cancel(w *waiter) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !w.queued {
		return false
	}
	p.waiters.remove(w)
	return true
}

// evictOne takes the least recently used idle instance of another function
// and moves its memory reservation into res. It reports false when nothing
// can be evicted. It locks one pool at a time and must be called with none held.
func (s *Scheduler) evictOne(requester *pool, res *reservation) bool {
	var (
		best   *pool
		bestAt time.Time
		bestID uint64
	)
	s.pools.Range(func(_, v any) bool {
		q := v.(*pool)
		if q == requester {
			return true
		}
		q.mu.Lock()
		if in := q.evictableLocked(); in != nil {
			if best == nil || in.idleSince.Before(bestAt) || (in.idleSince.Equal(bestAt) && in.id < bestID) {
				best, bestAt, bestID = q, in.idleSince, in.id
			}
		}
		q.mu.Unlock()
		return true
	})
	if best == nil {
		return false
	}
	best.mu.Lock()
	defer best.mu.Unlock()
	in := best.evictableLocked()
	if in == nil { // taken meanwhile: let the caller look again, a few times
		res.races++
		return res.races < 8
	}
	best.stats.Evicted++
	best.setState(in, StateStopping, s.clock.Now())
	best.avail.remove(in)
	res.credit += in.reserved
	in.reserved = 0
	res.victims = append(res.victims, in)
	return true
}

// evictableLocked returns the pool's least recently used idle instance that
// may be evicted without going below MinInstances.
func (p *pool) evictableLocked() *instance {
	if p.closed || p.liveLocked() <= p.cfg.MinInstances {
		return nil
	}
	for in := p.avail.tail; in != nil; in = in.prev {
		if in.inflight == 0 && in.state == StateIdle {
			return in
		}
	}
	return nil
}

// runStart runs a start job: it calls the StartFunc outside any lock.
func (p *pool) runStart(in *instance) {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	var (
		inst Instance
		err  error
	)
	if closed {
		err = errors.New("function removed before its instance started")
	} else {
		ctx, cancel := p.s.baseCtx, context.CancelFunc(func() {})
		if p.s.startTimeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, p.s.startTimeout)
		}
		inst, err = p.start(ctx)
		cancel()
		if err == nil && inst == nil {
			err = errors.New("StartFunc returned a nil Instance")
		}
	}
	p.started(in, inst, err)
}

func (p *pool) started(in *instance, inst Instance, err error) {
	var e effects
	p.mu.Lock()
	now := p.s.clock.Now()
	in.startDur = now.Sub(in.created)
	if err != nil {
		p.setState(in, StateStopping, now)
		p.finishLocked(in, now)
		if !p.closed {
			p.stats.StartFailures++
			p.s.log.Warn("instance start failed", "function", p.name, "err", err)
			if p.waiters.n > p.startingSlotsLocked() { // the request this start was for
				e.deliver(p.waiters.popFront(), nil, fmt.Errorf("function %q: start instance: %w", p.name, err))
			}
			p.rebalanceLocked(now, &e)
		}
		p.mu.Unlock()
		p.s.run(&e)
		p.s.live.Done()
		return
	}
	in.inst = inst
	if p.closed {
		p.stopLocked(in, now, &e)
	} else {
		p.stats.Started++
		for in.inflight < p.slots && p.waiters.n > 0 {
			w := p.waiters.popFront()
			e.deliver(w, p.grantLocked(in, now, w.enq, true), nil)
		}
		switch {
		case in.inflight == 0:
			p.idleLocked(in, now, &e)
		case in.inflight < p.slots:
			p.avail.pushFront(in)
		}
	}
	p.mu.Unlock()
	p.s.run(&e)
}

// idleLocked handles an instance that has just become idle with nobody
// waiting: the policy decides how long it stays and whether to pre-warm.
func (p *pool) idleLocked(in *instance, now time.Time, e *effects) {
	if in.retire || p.closed || (p.cfg.SingleUse && in.served > 0) {
		p.stopLocked(in, now, e)
		return
	}
	p.setState(in, StateIdle, now)
	in.idleSince = now
	p.avail.moveToFront(in)
	var d Decision
	if in.warmKeep > 0 && in.served == 0 {
		d.KeepAlive = in.warmKeep // pre-warmed, waiting for its predicted request
	} else {
		d = p.tracker.Decide(now)
	}
	in.expires = now.Add(d.KeepAlive)
	if d.KeepAlive > 0 {
		p.armReaperLocked(now, in.expires)
	} else if p.liveLocked() > p.cfg.MinInstances {
		p.stopLocked(in, now, e)
	}
	p.maybePrewarmLocked(d)
}

// replaceSingleUseLocked starts a fresh instance to stand in for a used
// single-use one, as the policy allows.
func (p *pool) replaceSingleUseLocked(now time.Time, e *effects) {
	d := p.tracker.Decide(now)
	if d.KeepAlive > 0 && p.canGrowLocked() && p.s.budget.tryReserve(p.mb) {
		p.stats.PreWarmed++
		in := p.newInstanceLocked(now)
		in.warmKeep = d.KeepAlive
		e.starts = append(e.starts, startJob{in: in})
	}
	p.maybePrewarmLocked(d)
}

// maybePrewarmLocked schedules the pre-warm a decision asks for once the
// function is quiet.
func (p *pool) maybePrewarmLocked(d Decision) {
	if d.PreWarm > d.KeepAlive && p.counts[StateBusy] == 0 && p.counts[StateStarting] == 0 && p.waiters.n == 0 {
		p.schedulePrewarmLocked(d.PreWarm, d.PreWarmKeepAlive)
	}
}

// stopLocked takes an instance out of service and queues its Close.
func (p *pool) stopLocked(in *instance, now time.Time, e *effects) {
	if in.state == StateStopping || in.state == StateNone {
		return
	}
	p.avail.remove(in)
	p.setState(in, StateStopping, now)
	e.stops = append(e.stops, in)
}

// closeInstance closes a stopping instance and returns its memory.
func (p *pool) closeInstance(ctx context.Context, in *instance) error {
	var err error
	if in.inst != nil {
		ctx, cancel := context.WithTimeout(ctx, p.s.stopTimeout)
		err = in.inst.Close(ctx)
		cancel()
		if err != nil {
			err = fmt.Errorf("close instance %d of %q: %w", in.id, p.name, err)
			p.s.log.Warn("instance close failed", "err", err)
		}
	}
	var e effects
	p.mu.Lock()
	now := p.s.clock.Now()
	p.finishLocked(in, now)
	if !p.closed {
		p.rebalanceLocked(now, &e)
		p.ensureMinLocked(now, &e)
	}
	p.mu.Unlock()
	p.s.run(&e)
	p.s.live.Done()
	return err
}

// finishLocked forgets a stopping instance and frees its memory.
func (p *pool) finishLocked(in *instance, now time.Time) {
	p.setState(in, StateNone, now)
	p.memMB -= p.mb
	p.s.budget.release(in.reserved)
	in.reserved = 0
}

// rebalanceLocked starts instances for waiters no start covers, and fails
// such waiters when nothing in the pool could ever serve them.
func (p *pool) rebalanceLocked(now time.Time, e *effects) {
	for p.waiters.n > p.startingSlotsLocked() && p.canGrowLocked() && p.s.budget.tryReserve(p.mb) {
		e.starts = append(e.starts, startJob{in: p.newInstanceLocked(now)})
	}
	if p.waiters.n > 0 && p.liveLocked() == 0 {
		err := p.rejectLocked("node memory budget exhausted while the request waited")
		for p.waiters.n > 0 {
			e.deliver(p.waiters.popFront(), nil, err)
		}
	}
}

func (p *pool) ensureMinLocked(now time.Time, e *effects) {
	for p.liveLocked() < p.cfg.MinInstances && p.canGrowLocked() && p.s.budget.tryReserve(p.mb) {
		e.starts = append(e.starts, startJob{in: p.newInstanceLocked(now)})
	}
}

// armReaperLocked makes sure the keep-alive timer fires no later than at.
// One timer per pool serves all its idle instances, so the release path
// rarely touches a timer.
func (p *pool) armReaperLocked(now, at time.Time) {
	if p.reapTimer != nil && !p.reapAt.After(at) {
		return
	}
	if p.reapTimer != nil {
		p.reapTimer.Stop()
	}
	p.reapGen++
	gen := p.reapGen
	p.reapAt = at
	p.reapTimer = p.s.clock.AfterFunc(at.Sub(now), func() { p.reap(gen) })
}

// reap closes idle instances whose keep-alive has expired.
func (p *pool) reap(gen uint64) {
	var e effects
	p.mu.Lock()
	if p.closed || gen != p.reapGen {
		p.mu.Unlock()
		return
	}
	p.reapTimer = nil
	now := p.s.clock.Now()
	var next time.Time
	for in := p.avail.tail; in != nil; {
		prev := in.prev
		if in.inflight == 0 {
			if !in.expires.After(now) {
				if p.liveLocked() > p.cfg.MinInstances {
					p.stats.Reaped++
					p.stopLocked(in, now, &e)
				}
			} else if next.IsZero() || in.expires.Before(next) {
				next = in.expires
			}
		}
		in = prev
	}
	if !next.IsZero() {
		p.armReaperLocked(now, next)
	}
	p.mu.Unlock()
	p.s.run(&e)
}

func (p *pool) schedulePrewarmLocked(delay, keep time.Duration) {
	if p.warmTimer != nil {
		p.warmTimer.Stop()
	}
	p.warmGen++
	gen := p.warmGen
	p.warmTimer = p.s.clock.AfterFunc(delay, func() { p.prewarm(gen, max(keep, time.Nanosecond)) })
}

// prewarm starts, ahead of the predicted next invocation, as many instances
// as were busy at once during the last active period, minus those alive.
func (p *pool) prewarm(gen uint64, keep time.Duration) {
	var e effects
	p.mu.Lock()
	if !p.closed && gen == p.warmGen {
		p.warmTimer = nil
		now := p.s.clock.Now()
		for n := max(p.peakBusy, 1) - p.liveLocked(); n > 0 && p.canGrowLocked() && p.s.budget.tryReserve(p.mb); n-- {
			in := p.newInstanceLocked(now)
			in.warmKeep = keep
			p.stats.PreWarmed++
			e.starts = append(e.starts, startJob{in: in})
		}
		p.peakBusy = 0
	}
	p.mu.Unlock()
	p.s.run(&e)
}

// shutdown closes the pool: see Unregister.
func (p *pool) shutdown(ctx context.Context, cause error) error {
	var e effects
	p.mu.Lock()
	p.shutdownLocked(p.s.clock.Now(), cause, &e)
	p.mu.Unlock()
	for _, d := range e.deliveries {
		d.w.deliver(d.l, d.err)
	}
	var errs []error
	for _, in := range e.stops {
		errs = append(errs, p.closeInstance(ctx, in))
	}
	return errors.Join(errs...)
}

// shutdownLocked marks the pool closed, fails its waiters with cause and
// queues the close of its idle instances; busy ones retire on release and
// starting ones are closed when their start returns.
func (p *pool) shutdownLocked(now time.Time, cause error, e *effects) {
	p.closed = true
	if p.reapTimer != nil {
		p.reapTimer.Stop()
		p.reapTimer = nil
	}
	if p.warmTimer != nil {
		p.warmTimer.Stop()
		p.warmTimer = nil
	}
	p.reapGen++
	p.warmGen++
	for in := p.avail.head; in != nil; {
		next := in.next
		p.avail.remove(in)
		if in.inflight == 0 {
			p.stopLocked(in, now, e)
		} else {
			in.retire = true
		}
		in = next
	}
	for p.waiters.n > 0 {
		e.deliver(p.waiters.popFront(), nil, cause)
	}
}

// instList is an intrusive doubly linked list of instances.
type instList struct {
	head, tail *instance
	n          int
}

func (l *instList) pushFront(in *instance) {
	in.prev, in.next = nil, l.head
	if l.head != nil {
		l.head.prev = in
	} else {
		l.tail = in
	}
	l.head = in
	in.listed = true
	l.n++
}

func (l *instList) remove(in *instance) {
	if !in.listed {
		return
	}
	if in.prev != nil {
		in.prev.next = in.next
	} else {
		l.head = in.next
	}
	if in.next != nil {
		in.next.prev = in.prev
	} else {
		l.tail = in.prev
	}
	in.prev, in.next, in.listed = nil, nil, false
	l.n--
}

func (l *instList) moveToFront(in *instance) {
	if l.head == in {
		return
	}
	l.remove(in)
	l.pushFront(in)
}

// waitList is an intrusive FIFO of waiters.
type waitList struct {
	head, tail *waiter
	n          int
}

func (l *waitList) pushBack(w *waiter) {
	w.next, w.prev = nil, l.tail
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
	w.queued = true
	l.n++
}

func (l *waitList) popFront() *waiter {
	w := l.head
	l.remove(w)
	return w
}

func (l *waitList) remove(w *waiter) {
	if !w.queued {
		return
	}
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	l.n--
}
