package scheduler

import (
	"slices"
	"testing"
	"time"
)

func TestFakeClock_OrderAndStop(t *testing.T) {
	c := NewFakeClock(epoch)
	var got []string
	c.AfterFunc(2*time.Second, func() { got = append(got, "b") })
	c.AfterFunc(time.Second, func() {
		got = append(got, "a@"+c.Now().Sub(epoch).String())
		c.AfterFunc(0, func() { got = append(got, "a-child") }) // due now: runs in the same Advance
	})
	c.AfterFunc(2*time.Second, func() { got = append(got, "c") }) // same deadline as b: runs after it
	stopped := c.AfterFunc(1500*time.Millisecond, func() { got = append(got, "never") })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop should report true once, then false")
	}
	if next, ok := c.Next(); !ok || next != epoch.Add(time.Second) {
		t.Fatalf("Next = %v, %v", next, ok)
	}
	c.Advance(1999 * time.Millisecond)
	if want := []string{"a@1s", "a-child"}; !slices.Equal(got, want) {
		t.Fatalf("after 1.999s got %v, want %v", got, want)
	}
	c.Advance(time.Millisecond)
	if want := []string{"a@1s", "a-child", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("after 2s got %v, want %v", got, want)
	}
	if c.Now() != epoch.Add(2*time.Second) || c.Pending() != 0 || c.Step() {
		t.Fatalf("clock at %v with %d pending", c.Now(), c.Pending())
	}
	c.AfterFunc(time.Hour, func() { got = append(got, "step") })
	if !c.Step() || c.Now() != epoch.Add(time.Hour+2*time.Second) {
		t.Fatalf("Step moved the clock to %v", c.Now())
	}
	c.AdvanceTo(epoch) // never backwards
	if c.Now() != epoch.Add(time.Hour+2*time.Second) {
		t.Fatal("AdvanceTo moved the clock backwards")
	}
}
