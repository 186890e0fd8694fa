package scheduler

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// epoch is minute-aligned so hybrid bins line up with test arithmetic.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// fleet starts fake instances and checks that each is closed exactly once.
type fleet struct {
	started, closed, doubleClose atomic.Int64
	fail                         atomic.Bool
	block                        chan struct{} // if set, starts wait for it
}

type fakeInstance struct {
	id     int64
	closes atomic.Int32
	f      *fleet
}

func (i *fakeInstance) Close(context.Context) error {
	if i.closes.Add(1) > 1 {
		i.f.doubleClose.Add(1)
		return errors.New("closed twice")
	}
	i.f.closed.Add(1)
	return nil
}

var errBoom = errors.New("boom")

func (f *fleet) start(ctx context.Context) (Instance, error) {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.fail.Load() {
		return nil, errBoom
	}
	return &fakeInstance{id: f.started.Add(1), f: f}, nil
}

func (f *fleet) live() int64 { return f.started.Load() - f.closed.Load() }

// syncExec runs jobs at once on the caller's goroutine: with a FakeClock,
// the scheduler becomes fully deterministic.
func syncExec(_ JobKind, _ string, job func()) { job() }

// newFake returns a scheduler on a fake clock with synchronous jobs.
func newFake(t testing.TB, opts Options) (*Scheduler, *FakeClock) {
	t.Helper()
	clock := NewFakeClock(epoch)
	opts.Clock = clock
	opts.Executor = syncExec
	s := New(opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if v := s.budget.violations.Load(); v != 0 {
			t.Errorf("budget went negative %d times", v)
		}
		if u := s.MemoryUsedMB(); u != 0 {
			t.Errorf("after Close, %d MB still reserved", u)
		}
	})
	return s, clock
}

func mustRegister(t testing.TB, s *Scheduler, cfg FunctionConfig, f *fleet) {
	t.Helper()
	if err := s.Register(cfg, f.start); err != nil {
		t.Fatalf("Register(%q): %v", cfg.Name, err)
	}
}

func mustAcquire(t testing.TB, s *Scheduler, name string) *Lease {
	t.Helper()
	l, err := s.Acquire(context.Background(), name)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", name, err)
	}
	return l
}

func stats(t testing.TB, s *Scheduler, name string) Stats {
	t.Helper()
	st, ok := s.Stats(name)
	if !ok {
		t.Fatalf("Stats(%q): not found", name)
	}
	return st
}

// waitFor polls cond for up to 5 s of real time.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
