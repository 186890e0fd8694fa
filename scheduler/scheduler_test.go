package scheduler

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
)

func TestAcquire_ColdThenWarm(t *testing.T) {
	s, clock := newFake(t, Options{})
	f := &fleet{}
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 128}, f)

	l1 := mustAcquire(t, s, "f")
	if !l1.Cold() || l1.Function() != "f" {
		t.Fatalf("first lease: cold=%v function=%q", l1.Cold(), l1.Function())
	}
	if st := stats(t, s, "f"); st.Busy != 1 || st.Idle != 0 || st.MemoryMB != 128 || s.MemoryUsedMB() != 128 {
		t.Fatalf("while busy: %+v, node %d MB", st, s.MemoryUsedMB())
	}
	clock.Advance(time.Second)
	s.Release(l1, true)
	s.Release(l1, true) // double release is a no-op
	if st := stats(t, s, "f"); st.Busy != 0 || st.Idle != 1 {
		t.Fatalf("after release: %+v", st)
	}
	l2 := mustAcquire(t, s, "f")
	if l2.Cold() || l2.Instance() != l1.Instance() || l2.QueueWait() != 0 || l2.StartDuration() != 0 {
		t.Fatalf("second lease: cold=%v same=%v wait=%v", l2.Cold(), l2.Instance() == l1.Instance(), l2.QueueWait())
	}
	s.Release(l2, true)
	st := stats(t, s, "f")
	if st.Acquired != 2 || st.ColdStarts != 1 || st.Started != 1 || f.started.Load() != 1 {
		t.Fatalf("counters: %+v, started %d", st, f.started.Load())
	}
}

func TestRegister_Invalid(t *testing.T) {
	s, _ := newFake(t, Options{MemoryBudgetMB: 1024})
	f := &fleet{}
	for _, tc := range []struct {
		name  string
		cfg   FunctionConfig
		start StartFunc
	}{
		{"empty name", FunctionConfig{MemoryMB: 128}, f.start},
		{"zero memory", FunctionConfig{Name: "f"}, f.start},
		{"memory above budget", FunctionConfig{Name: "f", MemoryMB: 2048}, f.start},
		{"negative concurrency", FunctionConfig{Name: "f", MemoryMB: 128, Concurrency: -1}, f.start},
		{"concurrent single-use", FunctionConfig{Name: "f", MemoryMB: 128, Concurrency: 2, SingleUse: true}, f.start},
		{"negative min", FunctionConfig{Name: "f", MemoryMB: 128, MinInstances: -1}, f.start},
		{"min above max", FunctionConfig{Name: "f", MemoryMB: 128, MinInstances: 3, MaxInstances: 2}, f.start},
		{"min beyond budget", FunctionConfig{Name: "f", MemoryMB: 512, MinInstances: 3}, f.start},
		{"nil start", FunctionConfig{Name: "f", MemoryMB: 128}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Register(tc.cfg, tc.start); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Register = %v, want ErrInvalidArgument", err)
			}
		})
	}
	if _, ok := s.Stats("f"); ok {
		t.Fatal("an invalid function was registered")
	}
}

func TestAcquire_NotFound(t *testing.T) {
	s, _ := newFake(t, Options{})
	if _, err := s.Acquire(context.Background(), "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Acquire = %v, want ErrNotFound", err)
	}
	if err := s.Unregister(context.Background(), "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Unregister = %v, want ErrNotFound", err)
	}
}

// acquireInBackground starts an Acquire and returns its eventual result.
func acquireInBackground(ctx context.Context, s *Scheduler, name string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		l, err := s.Acquire(ctx, name)
		ch <- result{l, err}
	}()
	return ch
}

func TestAcquire_BackPressure(t *testing.T) {
	for _, tc := range []struct {
		name      string
		queueSize int
		queued    int // requests that wait before the queue is full
	}{
		{"queue of one", 1, 1},
		{"queue of three", 3, 3},
		{"no queue", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, clock := newFake(t, Options{})
			mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64, MaxInstances: 1, QueueSize: tc.queueSize}, &fleet{})
			held := mustAcquire(t, s, "f")
			var waiting []<-chan result
			for i := range tc.queued {
				waiting = append(waiting, acquireInBackground(context.Background(), s, "f"))
				waitFor(t, "request to queue", func() bool { return stats(t, s, "f").Queued == i+1 })
			}
			_, err := s.Acquire(context.Background(), "f")
			var re *errdefs.RetryableError
			if !errors.Is(err, errdefs.ErrUnavailable) || !errors.As(err, &re) || re.RetryAfter <= 0 {
				t.Fatalf("Acquire with a full queue = %v, want a RetryableError around ErrUnavailable", err)
			}
			if st := stats(t, s, "f"); st.Rejected != 1 {
				t.Fatalf("Rejected = %d", st.Rejected)
			}
			// Each release hands the instance to the next waiter, in order.
			clock.Advance(2 * time.Second)
			s.Release(held, true)
			for i, ch := range waiting {
				r := <-ch
				if r.err != nil || r.l.Cold() || r.l.QueueWait() != 2*time.Second {
					t.Fatalf("waiter %d: %v, %+v", i, r.err, r.l)
				}
				s.Release(r.l, true)
			}
			if st := stats(t, s, "f"); st.Started != 1 || st.Idle != 1 || st.Queued != 0 {
				t.Fatalf("after draining the queue: %+v", st)
			}
		})
	}
}

func TestAcquire_DeadlineInQueue(t *testing.T) {
	s := New(Options{}) // real clock: the deadline is real
	defer s.Close(context.Background())
	f := &fleet{}
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64, MaxInstances: 1}, f)
	held := mustAcquire(t, s, "f")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Acquire(ctx, "f")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire = %v, want DeadlineExceeded", err)
	}
	if waited := time.Since(start); waited < 20*time.Millisecond || waited > 2*time.Second {
		t.Fatalf("gave up after %v", waited)
	}
	if st := stats(t, s, "f"); st.Queued != 0 {
		t.Fatalf("the timed-out request is still queued: %+v", st)
	}
	s.Release(held, true)
	if st := stats(t, s, "f"); st.Idle != 1 || st.Busy != 0 {
		t.Fatalf("instance not back in the pool: %+v", st)
	}

	// AcquireAsync honours its context the same way.
	held = mustAcquire(t, s, "f")
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s.AcquireAsync(ctx2, "f", func(l *Lease, err error) { done <- err })
	waitFor(t, "async request to queue", func() bool { return stats(t, s, "f").Queued == 1 })
	cancel2()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("AcquireAsync = %v, want Canceled", err)
	}
	s.Release(held, true)
}

func TestAcquire_EvictsOtherFunctionsLRU(t *testing.T) {
	s, clock := newFake(t, Options{MemoryBudgetMB: 512})
	fa, fb, fc := &fleet{}, &fleet{}, &fleet{}
	mustRegister(t, s, FunctionConfig{Name: "a", MemoryMB: 128}, fa)
	mustRegister(t, s, FunctionConfig{Name: "b", MemoryMB: 256}, fb)
	mustRegister(t, s, FunctionConfig{Name: "c", MemoryMB: 384}, fc)

	// Two idle instances of a (older), one idle instance of b (newer): 512 MB.
	a1, a2 := mustAcquire(t, s, "a"), mustAcquire(t, s, "a")
	s.Release(a1, true)
	clock.Advance(time.Second)
	s.Release(a2, true)
	clock.Advance(time.Second)
	s.Release(mustAcquire(t, s, "b"), true)
	if s.MemoryUsedMB() != 512 {
		t.Fatalf("node holds %d MB", s.MemoryUsedMB())
	}

	// c needs 384 MB: evict a1 then a2 (least recently used first) and,
	// still short, b1.
	lc := mustAcquire(t, s, "c")
	if !lc.Cold() {
		t.Fatal("c should have cold-started")
	}
	if sa, sb := stats(t, s, "a"), stats(t, s, "b"); sa.Evicted != 2 || sa.Idle != 0 || sb.Evicted != 1 {
		t.Fatalf("evictions: a %+v, b %+v", sa, sb)
	}
	if fa.live() != 0 || fb.live() != 0 || s.MemoryUsedMB() != 384 {
		t.Fatalf("a live %d, b live %d, node %d MB", fa.live(), fb.live(), s.MemoryUsedMB())
	}

	// Now b needs 256 MB but the only other instance is busy.
	_, err := s.Acquire(context.Background(), "b")
	if !errors.Is(err, errdefs.ErrUnavailable) || errdefs.RetryAfter(err) <= 0 {
		t.Fatalf("Acquire with nothing evictable = %v, want a retryable ErrUnavailable", err)
	}
	if st := stats(t, s, "b"); st.Rejected != 1 || st.Idle+st.Busy+st.Starting != 0 {
		t.Fatalf("b after rejection: %+v", st)
	}
	s.Release(lc, true)
	// ... until it is idle again: then it can be evicted.
	lb := mustAcquire(t, s, "b")
	if stats(t, s, "c").Evicted != 1 || fc.live() != 0 || s.MemoryUsedMB() != 256 {
		t.Fatal("c's idle instance was not evicted")
	}
	s.Release(lb, true)
}

func TestAcquire_BudgetFullWaitsForOwnInstance(t *testing.T) {
	s, _ := newFake(t, Options{MemoryBudgetMB: 128})
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 128}, &fleet{})
	held := mustAcquire(t, s, "f")
	ch := acquireInBackground(context.Background(), s, "f") // no budget for a second instance: waits
	waitFor(t, "request to queue", func() bool { return stats(t, s, "f").Queued == 1 })
	s.Release(held, true)
	r := <-ch
	if r.err != nil || r.l.Instance() != held.Instance() {
		t.Fatalf("waiter got %v, %v", r.l, r.err)
	}
	s.Release(r.l, true)
}

func TestReaping(t *testing.T) {
	hybrid, err := NewHybrid(DefaultHybridConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		policy Policy
		keep   time.Duration // expected keep-alive after the release
	}{
		{"fixed 5m", Fixed(5 * time.Minute), 5 * time.Minute},
		{"fixed default", nil, 10 * time.Minute},
		{"none", None(), 0},
		{"hybrid without history", hybrid, 4 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, clock := newFake(t, Options{})
			f := &fleet{}
			mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64, Policy: tc.policy}, f)
			l := mustAcquire(t, s, "f")
			clock.Advance(time.Second)
			s.Release(l, true)
			if tc.keep > 0 {
				clock.Advance(tc.keep - time.Nanosecond)
				if st := stats(t, s, "f"); st.Idle != 1 || f.closed.Load() != 0 {
					t.Fatalf("reaped early: %+v", st)
				}
				clock.Advance(time.Nanosecond)
			}
			if st := stats(t, s, "f"); st.Idle != 0 || f.closed.Load() != 1 || s.MemoryUsedMB() != 0 {
				t.Fatalf("not reaped on time: %+v, closed %d", st, f.closed.Load())
			}
		})
	}
}

func TestReaping_ReuseExtendsKeepAlive(t *testing.T) {
	s, clock := newFake(t, Options{DefaultPolicy: Fixed(5 * time.Minute)})
	f := &fleet{}
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64}, f)
	s.Release(mustAcquire(t, s, "f"), true)
	clock.Advance(4 * time.Minute)
	s.Release(mustAcquire(t, s, "f"), true) // idle again at 4m: keep until 9m
	clock.Advance(5*time.Minute - time.Nanosecond)
	if f.closed.Load() != 0 {
		t.Fatal("reaped before the renewed keep-alive ended")
	}
	clock.Advance(time.Nanosecond)
	if f.closed.Load() != 1 {
		t.Fatal("not reaped when the renewed keep-alive ended")
	}
}

func TestHybrid_PreWarmsBeforePredictedInvocation(t *testing.T) {
	hybrid, err := NewHybrid(DefaultHybridConfig())
	if err != nil {
		t.Fatal(err)
	}
	s, clock := newFake(t, Options{DefaultPolicy: hybrid})
	f := &fleet{}
	mustRegister(t, s, FunctionConfig{Name: "cron", MemoryMB: 64}, f)

	// A timer function every 10 minutes, running 1s. The first six calls
	// teach the histogram (five gaps); meanwhile the 4h fallback keeps the
	// instance warm.
	const period = 10 * time.Minute
	invoke := func(i int) *Lease {
		clock.AdvanceTo(epoch.Add(time.Duration(i) * period))
		l := mustAcquire(t, s, "cron")
		clock.Advance(time.Second)
		s.Release(l, true)
		return l
	}
	for i := range 6 {
		if l := invoke(i); l.Cold() != (i == 0) {
			t.Fatalf("call %d: cold=%v", i, l.Cold())
		}
	}
	// Now head = 9m and tail = 12m6s after each arrival: the instance stays
	// for the rest of its minute, then is unloaded...
	base := epoch.Add(5 * period)
	clock.AdvanceTo(base.Add(time.Minute - time.Nanosecond))
	if st := stats(t, s, "cron"); st.Idle != 1 {
		t.Fatalf("unloaded before the minute ended: %+v", st)
	}
	clock.AdvanceTo(base.Add(time.Minute))
	if st := stats(t, s, "cron"); st.Idle != 0 || f.live() != 0 {
		t.Fatalf("not unloaded after its minute: %+v", st)
	}
	// ... pre-warmed 9 minutes after the arrival ...
	clock.AdvanceTo(base.Add(9*time.Minute - time.Nanosecond))
	if f.live() != 0 {
		t.Fatal("pre-warmed early")
	}
	clock.AdvanceTo(base.Add(9 * time.Minute))
	if st := stats(t, s, "cron"); st.Idle != 1 || st.PreWarmed != 1 {
		t.Fatalf("not pre-warmed at 9m: %+v", st)
	}
	// ... so the next call is warm.
	if l := invoke(6); l.Cold() {
		t.Fatal("the call after the pre-warm was cold")
	}
	// If the function then stops, the pre-warmed instance lives from 9m
	// to 12m6s after the last arrival and no longer.
	base = epoch.Add(6 * period)
	clock.AdvanceTo(base.Add(9 * time.Minute))
	if stats(t, s, "cron").PreWarmed != 2 {
		t.Fatal("second pre-warm missing")
	}
	clock.AdvanceTo(base.Add(12*time.Minute + 6*time.Second - time.Nanosecond))
	if stats(t, s, "cron").Idle != 1 {
		t.Fatal("pre-warmed instance reaped early")
	}
	clock.AdvanceTo(base.Add(12*time.Minute + 6*time.Second))
	if st := stats(t, s, "cron"); st.Idle != 0 || f.live() != 0 {
		t.Fatalf("pre-warmed instance not reaped on time: %+v", st)
	}
}

func TestMinInstances(t *testing.T) {
	s, clock := newFake(t, Options{DefaultPolicy: None()})
	f := &fleet{}
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64, MinInstances: 2}, f)
	if st := stats(t, s, "f"); st.Idle != 2 {
		t.Fatalf("after Register: %+v", st)
	}
	l1, l2, l3 := mustAcquire(t, s, "f"), mustAcquire(t, s, "f"), mustAcquire(t, s, "f")
	if l1.Cold() || l2.Cold() || !l3.Cold() {
		t.Fatal("min instances should serve the first two requests warm")
	}
	s.Release(l1, true)
	s.Release(l2, true)
	s.Release(l3, true) // "none" closes the third instance, keeps two
	clock.Advance(24 * time.Hour)
	if st := stats(t, s, "f"); st.Idle != 2 || f.live() != 2 {
		t.Fatalf("after a day: %+v", st)
	}
	s.Release(mustAcquire(t, s, "f"), false) // unhealthy: closed and replaced
	if st := stats(t, s, "f"); st.Idle != 2 || st.Unhealthy != 1 || f.closed.Load() != 2 {
		t.Fatalf("after an unhealthy release: %+v, closed %d", st, f.closed.Load())
	}
}

func TestRelease_Unhealthy(t *testing.T) {
	s, _ := newFake(t, Options{})
	f := &fleet{}
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64}, f)
	l1 := mustAcquire(t, s, "f")
	s.Release(l1, false)
	s.Release(l1, false)
	if f.closed.Load() != 1 || s.MemoryUsedMB() != 0 {
		t.Fatalf("closed %d, %d MB in use", f.closed.Load(), s.MemoryUsedMB())
	}
	l2 := mustAcquire(t, s, "f")
	if !l2.Cold() || l2.Instance() == l1.Instance() {
		t.Fatal("an unhealthy instance was reused")
	}
	s.Release(l2, true)
}

func TestSingleUse(t *testing.T) {
	s, clock := newFake(t, Options{DefaultPolicy: Fixed(time.Minute)})
	f := &fleet{}
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64, SingleUse: true}, f)
	seen := map[Instance]bool{}
	for i := range 5 {
		l := mustAcquire(t, s, "f")
		if seen[l.Instance()] {
			t.Fatalf("request %d reused an instance", i)
		}
		seen[l.Instance()] = true
		if l.Cold() != (i == 0) { // after the first, a fresh instance is pre-created
			t.Fatalf("request %d: cold=%v", i, l.Cold())
		}
		s.Release(l, true)
	}
	if st := stats(t, s, "f"); st.Idle != 1 || st.Started != 6 || f.closed.Load() != 5 {
		t.Fatalf("after 5 requests: %+v, closed %d", st, f.closed.Load())
	}
	clock.Advance(time.Minute)
	if st := stats(t, s, "f"); st.Idle != 0 || f.live() != 0 {
		t.Fatalf("spare single-use instance not reaped: %+v", st)
	}
}

func TestConcurrencyPerInstance(t *testing.T) {
	s, _ := newFake(t, Options{})
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64, Concurrency: 3, MaxInstances: 1, QueueSize: -1}, &fleet{})
	var ls []*Lease
	for range 3 {
		ls = append(ls, mustAcquire(t, s, "f"))
	}
	if ls[0].Instance() != ls[1].Instance() || ls[1].Instance() != ls[2].Instance() {
		t.Fatal("three requests should share one instance")
	}
	if _, err := s.Acquire(context.Background(), "f"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("fourth request = %v, want ErrUnavailable", err)
	}
	s.Release(ls[0], true)
	l := mustAcquire(t, s, "f") // a slot is free again
	if st := stats(t, s, "f"); st.Busy != 1 || st.Idle != 0 || st.Started != 1 {
		t.Fatalf("%+v", st)
	}
	for _, l := range append(ls[1:], l) {
		s.Release(l, true)
	}
	if st := stats(t, s, "f"); st.Busy != 0 || st.Idle != 1 {
		t.Fatalf("after releasing all: %+v", st)
	}
}

func TestRegister_Replace(t *testing.T) {
	s, _ := newFake(t, Options{})
	v1, v2 := &fleet{}, &fleet{}
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64, MaxInstances: 2}, v1)
	busy := mustAcquire(t, s, "f")
	s.Release(mustAcquire(t, s, "f"), true) // one idle
	busy2 := mustAcquire(t, s, "f")         // reuses it: both busy now
	ch := acquireInBackground(context.Background(), s, "f")
	waitFor(t, "request to queue", func() bool { return stats(t, s, "f").Queued == 1 })

	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64}, v2)
	if r := <-ch; !errors.Is(r.err, errdefs.ErrUnavailable) || errdefs.RetryAfter(r.err) <= 0 {
		t.Fatalf("waiter on the old version got %v, want a retryable ErrUnavailable", r.err)
	}
	if v1.live() != 2 {
		t.Fatal("busy instances of the old version must survive until released")
	}
	s.Release(busy, true)
	s.Release(busy2, true)
	if v1.live() != 0 {
		t.Fatal("old instances not closed on release")
	}
	l := mustAcquire(t, s, "f")
	if _, ok := l.Instance().(*fakeInstance); !ok || l.Instance().(*fakeInstance).f != v2 {
		t.Fatal("the new version did not start")
	}
	s.Release(l, true)
}

func TestUnregister(t *testing.T) {
	s, _ := newFake(t, Options{})
	f := &fleet{}
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64, MaxInstances: 1}, f)
	held := mustAcquire(t, s, "f")
	ch := acquireInBackground(context.Background(), s, "f")
	waitFor(t, "request to queue", func() bool { return stats(t, s, "f").Queued == 1 })
	if err := s.Unregister(context.Background(), "f"); err != nil {
		t.Fatal(err)
	}
	if r := <-ch; !errors.Is(r.err, errdefs.ErrNotFound) {
		t.Fatalf("waiter got %v, want ErrNotFound", r.err)
	}
	if _, err := s.Acquire(context.Background(), "f"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Acquire after Unregister = %v", err)
	}
	s.Release(held, true)
	if f.live() != 0 || s.MemoryUsedMB() != 0 {
		t.Fatalf("live %d, %d MB", f.live(), s.MemoryUsedMB())
	}
}

func TestStartFailure(t *testing.T) {
	s, _ := newFake(t, Options{})
	f := &fleet{}
	f.fail.Store(true)
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64}, f)
	_, err := s.Acquire(context.Background(), "f")
	if !errors.Is(err, errBoom) {
		t.Fatalf("Acquire = %v, want the start error", err)
	}
	if st := stats(t, s, "f"); st.StartFailures != 1 || st.Starting != 0 || st.MemoryMB != 0 || s.MemoryUsedMB() != 0 {
		t.Fatalf("after a failed start: %+v", st)
	}
	f.fail.Store(false)
	s.Release(mustAcquire(t, s, "f"), true)
}

func TestClose(t *testing.T) {
	s := New(Options{})
	f := &fleet{}
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64}, f)
	held := mustAcquire(t, s, "f")
	s.Release(mustAcquire(t, s, "f"), true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a lease out = %v, want DeadlineExceeded", err)
	}
	if _, err := s.Acquire(context.Background(), "f"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Acquire after Close = %v", err)
	}
	if err := s.Register(FunctionConfig{Name: "g", MemoryMB: 1}, f.start); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Register after Close = %v", err)
	}
	s.Release(held, true) // closed in the background
	waitFor(t, "the released instance to close", func() bool { return f.live() == 0 })
	if f.doubleClose.Load() != 0 || s.MemoryUsedMB() != 0 {
		t.Fatalf("live %d, double %d, %d MB", f.live(), f.doubleClose.Load(), s.MemoryUsedMB())
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestNoCrossFunctionBlocking checks the hot path takes no shared lock:
// function a is served while function b's pool lock is held and while b's
// instance is stuck starting.
func TestNoCrossFunctionBlocking(t *testing.T) {
	s := New(Options{})
	defer s.Close(context.Background())
	fa, fb := &fleet{}, &fleet{block: make(chan struct{})}
	mustRegister(t, s, FunctionConfig{Name: "a", MemoryMB: 64}, fa)
	mustRegister(t, s, FunctionConfig{Name: "b", MemoryMB: 64}, fb)
	s.Release(mustAcquire(t, s, "a"), true)

	bDone := acquireInBackground(context.Background(), s, "b") // stuck in b's StartFunc
	waitFor(t, "b to start", func() bool { return stats(t, s, "b").Starting == 1 })
	pb, _ := s.lookup("b")
	pb.mu.Lock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			l, err := s.Acquire(context.Background(), "a")
			if err != nil {
				t.Error(err)
				return
			}
			s.Release(l, true)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("acquiring a waited for b")
	}
	pb.mu.Unlock()
	close(fb.block)
	if r := <-bDone; r.err != nil {
		t.Fatal(r.err)
	} else {
		s.Release(r.l, true)
	}
}

func TestAcquireAsync(t *testing.T) {
	s, _ := newFake(t, Options{})
	mustRegister(t, s, FunctionConfig{Name: "f", MemoryMB: 64, MaxInstances: 1}, &fleet{})
	var got []string
	var held []*Lease
	cb := func(tag string) func(*Lease, error) {
		return func(l *Lease, err error) {
			got = append(got, fmt.Sprintf("%s cold=%v err=%v", tag, l != nil && l.Cold(), err != nil))
			if l != nil {
				held = append(held, l)
			}
		}
	}
	s.AcquireAsync(context.Background(), "f", cb("first"))  // served at once (synchronous start)
	s.AcquireAsync(context.Background(), "f", cb("second")) // queued behind the only instance
	s.AcquireAsync(context.Background(), "nope", cb("missing"))
	want := []string{"first cold=true err=false", "missing cold=false err=true"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	s.Release(held[0], true) // hands the instance to the second request
	if len(got) != 3 || got[2] != "second cold=false err=false" {
		t.Fatalf("got %q", got)
	}
	s.Release(held[1], true)
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{StateNone: "none", StateStarting: "starting", StateIdle: "idle", StateBusy: "busy", StateStopping: "stopping", 9: "State(9)"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q", s, s.String())
		}
	}
}
