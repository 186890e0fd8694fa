package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
)

// TestHammer drives many goroutines through Acquire/Release on many
// functions, on the real clock and the default (goroutine) executor, with a
// memory budget tight enough to force evictions and rejections, a mix of
// policies, pool shapes and unhealthy releases, while another goroutine
// keeps replacing functions. Run it with -race. At the end no instance may
// be lost or closed twice and the budget must balance.
func TestHammer(t *testing.T) {
	const (
		functions = 24
		workers   = 32
		memMB     = 64
		budgetMB  = memMB * 40
	)
	iterations := 1500
	if testing.Short() {
		iterations = 300
	}
	hybrid, err := ParsePolicy("hybrid:bin=1ms,range=200ms,min=2,fallback=20ms")
	if err != nil {
		t.Fatal(err)
	}
	policies := []Policy{Fixed(5 * time.Millisecond), None(), hybrid, Fixed(time.Hour)}
	s := New(Options{MemoryBudgetMB: budgetMB})
	fleets := make([]*fleet, functions)
	configs := make([]FunctionConfig, functions)
	for i := range functions {
		fleets[i] = &fleet{}
		configs[i] = FunctionConfig{
			Name:         fmt.Sprintf("f%02d", i),
			MemoryMB:     memMB,
			Concurrency:  1 + i%3,
			MaxInstances: i % 4, // 0: bounded by the budget only
			QueueSize:    4,
			Policy:       policies[i%len(policies)],
		}
		if i%5 == 0 {
			configs[i].MinInstances = 1
			configs[i].MaxInstances = max(configs[i].MaxInstances, 1)
		}
		if i%7 == 0 {
			configs[i].SingleUse, configs[i].Concurrency = true, 1
		}
		mustRegister(t, s, configs[i], fleets[i])
	}

	var (
		acquired, rejected, timedOut, replaced atomic.Int64
		stop                                   = make(chan struct{})
		bg                                     sync.WaitGroup
	)
	// The monitor checks the budget while everything moves.
	bg.Add(2)
	go func() {
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if u := s.MemoryUsedMB(); u < 0 || u > budgetMB {
				t.Errorf("node memory %d MB outside [0, %d]", u, budgetMB)
			}
			for _, c := range configs {
				if st, ok := s.Stats(c.Name); ok && (st.Starting < 0 || st.Idle < 0 || st.Busy < 0 || st.Stopping < 0 || st.MemoryMB < 0) {
					t.Errorf("%s: negative stats %+v", c.Name, st)
				}
			}
			runtime.Gosched()
		}
	}()
	// The churner replaces functions now and then.
	go func() {
		defer bg.Done()
		rng := rand.New(rand.NewPCG(99, 99))
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			i := rng.IntN(functions)
			if err := s.Register(configs[i], fleets[i].start); err != nil {
				t.Errorf("replace %s: %v", configs[i].Name, err)
			}
			replaced.Add(1)
		}
	}()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range iterations {
				name := configs[rng.IntN(functions)].Name
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+rng.IntN(3))*time.Millisecond)
				l, err := s.Acquire(ctx, name)
				cancel()
				switch {
				case err == nil:
					acquired.Add(1)
					if rng.IntN(4) == 0 {
						runtime.Gosched()
					}
					s.Release(l, rng.IntN(20) != 0)
				case errors.Is(err, context.DeadlineExceeded):
					timedOut.Add(1)
				case errors.Is(err, errdefs.ErrUnavailable) && errdefs.RetryAfter(err) > 0:
					rejected.Add(1)
				default:
					t.Errorf("Acquire(%s): unexpected error %v", name, err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	bg.Wait()

	// Quiesce: every lease is back, so only idle instances may remain,
	// once background starts and closes are done. Keep-alive and pre-warm
	// timers still fire, so the pools and the node budget are read until a
	// pass sees no budget change while it reads every pool; a lasting
	// imbalance fails after the deadline.
	var last string
	deadline := time.Now().Add(5 * time.Second)
	for {
		before := s.MemoryUsedMB()
		settled, total := true, 0
		for i, c := range configs {
			st := stats(t, s, c.Name)
			if st.Busy != 0 || st.Starting != 0 || st.Stopping != 0 || st.Queued != 0 || fleets[i].live() != int64(st.Idle) {
				settled = false
				last = fmt.Sprintf("%s not settled: %+v, %d live", c.Name, st, fleets[i].live())
				break
			}
			if st.MemoryMB != st.Idle*memMB {
				t.Fatalf("%s: %d MB for %d idle instances", c.Name, st.MemoryMB, st.Idle)
			}
			total += st.MemoryMB
		}
		after := s.MemoryUsedMB()
		if settled && before == after {
			if total == after {
				break
			}
			last = fmt.Sprintf("functions hold %d MB, node budget says %d MB", total, after)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pools never settled with the budget balanced: %s", last)
		}
		time.Sleep(time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var started, double int64
	for i, f := range fleets {
		started += f.started.Load()
		double += f.doubleClose.Load()
		if f.live() != 0 {
			t.Errorf("%s: %d instances never closed", configs[i].Name, f.live())
		}
	}
	if double != 0 || s.budget.violations.Load() != 0 || s.MemoryUsedMB() != 0 {
		t.Errorf("closed twice: %d, budget violations: %d, left reserved: %d MB", double, s.budget.violations.Load(), s.MemoryUsedMB())
	}
	if acquired.Load() == 0 || rejected.Load()+timedOut.Load() == 0 {
		t.Errorf("the hammer exercised too little: %d acquired, %d rejected, %d timed out", acquired.Load(), rejected.Load(), timedOut.Load())
	}
	t.Logf("%d acquired, %d rejected, %d timed out, %d instances started, %d replacements",
		acquired.Load(), rejected.Load(), timedOut.Load(), started, replaced.Load())
}
