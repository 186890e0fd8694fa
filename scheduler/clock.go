package scheduler

import (
	"container/heap"
	"sync"
	"time"
)

// Timer is a pending callback created by Clock.AfterFunc.
type Timer interface {
	// Stop cancels the callback; it reports whether the call stopped it
	// (false if it already ran or was stopped).
	Stop() bool
}

// Clock is the scheduler's only source of time, so that tests and the
// simulator can run it on virtual time.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f, on any goroutine, once d has elapsed.
	AfterFunc(d time.Duration, f func()) Timer
}

// SystemClock returns the wall clock (time.Now and time.AfterFunc).
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// FakeClock is a virtual Clock for tests and simulation. Time only moves
// when the owner calls Advance, AdvanceTo or Step; due callbacks then run
// synchronously on the caller's goroutine, in deadline order (ties in the
// order they were scheduled), with Now reporting each callback's deadline.
// It is safe for concurrent use; callbacks may schedule further timers.
type FakeClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers timerHeap
}

// NewFakeClock returns a FakeClock reading start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

// Now returns the virtual time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f at Now()+d. A callback with d <= 0 runs on the next
// Advance, AdvanceTo or Step, never inside AfterFunc itself.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d < 0 {
		d = 0
	}
	c.seq++
	t := &fakeTimer{c: c, when: c.now.Add(d), seq: c.seq, f: f}
	heap.Push(&c.timers, t)
	return t
}

// Advance moves the clock forward by d, running every callback due by then.
func (c *FakeClock) Advance(d time.Duration) { c.AdvanceTo(c.Now().Add(d)) }

// AdvanceTo moves the clock to t (never backwards), running every callback
// due at or before t, including those scheduled by the callbacks themselves.
func (c *FakeClock) AdvanceTo(t time.Time) {
	for {
		c.mu.Lock()
		if len(c.timers) == 0 || c.timers[0].when.After(t) {
			if t.After(c.now) {
				c.now = t
			}
			c.mu.Unlock()
			return
		}
		f := c.popLocked()
		c.mu.Unlock()
		f()
	}
}

// Step advances the clock to the earliest pending callback and runs it. It
// reports false, without moving the clock, when nothing is pending.
func (c *FakeClock) Step() bool {
	c.mu.Lock()
	if len(c.timers) == 0 {
		c.mu.Unlock()
		return false
	}
	f := c.popLocked()
	c.mu.Unlock()
	f()
	return true
}

// Next returns the deadline of the earliest pending callback.
func (c *FakeClock) Next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return time.Time{}, false
	}
	return c.timers[0].when, true
}

// Pending returns the number of scheduled callbacks.
func (c *FakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

func (c *FakeClock) popLocked() func() {
	t := heap.Pop(&c.timers).(*fakeTimer)
	if t.when.After(c.now) {
		c.now = t.when
	}
	return t.f
}

type fakeTimer struct {
	c     *FakeClock
	when  time.Time
	seq   uint64
	f     func()
	index int // position in the heap, -1 once fired or stopped
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&t.c.timers, t.index)
	return true
}

type timerHeap []*fakeTimer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].when.Equal(h[j].when) {
		return h[i].when.Before(h[j].when)
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*fakeTimer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old)
	t := old[n-1]
	old[n-1] = nil
	t.index = -1
	*h = old[:n-1]
	return t
}
