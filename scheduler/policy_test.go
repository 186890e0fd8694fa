package scheduler

import (
	"errors"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means an error
	}{
		{"fixed", "fixed:10m"},
		{"fixed:5m", "fixed:5m"},
		{" FIXED:1h30m ", "fixed:1h30m"},
		{"fixed:0s", "none"},
		{"none", "none"},
		{"hybrid", "hybrid"},
		{"hybrid:fallback=10m", "hybrid:fallback=10m"},
		{"hybrid:head=1,tail=95,margin=0.2,min=3,cv=1.5,oob=0.3,range=2h,bin=30s", "hybrid:bin=30s,range=2h,head=1,tail=95,margin=0.2,min=3,cv=1.5,oob=0.3"},
		{"fixed:abc", ""},
		{"fixed:-1s", ""},
		{"none:1m", ""},
		{"bogus", ""},
		{"", ""},
		{"hybrid:foo=1", ""},
		{"hybrid:head", ""},
		{"hybrid:head=50,tail=10", ""},
		{"hybrid:bin=0s", ""},
		{"hybrid:margin=1", ""},
		{"hybrid:min=0", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePolicy(tc.in)
			if tc.want == "" {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("ParsePolicy(%q) = %v, %v; want ErrInvalidArgument", tc.in, p, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePolicy(%q): %v", tc.in, err)
			}
			if p.String() != tc.want {
				t.Fatalf("ParsePolicy(%q).String() = %q, want %q", tc.in, p.String(), tc.want)
			}
			again, err := ParsePolicy(p.String())
			if err != nil || again.String() != p.String() {
				t.Fatalf("round trip of %q: %v, %v", p, again, err)
			}
		})
	}
}

func TestFixedPolicy(t *testing.T) {
	tr := Fixed(7 * time.Minute).NewTracker("f")
	tr.OnInvocation(epoch)
	if d := tr.Decide(epoch); d != (Decision{KeepAlive: 7 * time.Minute}) {
		t.Fatalf("fixed decision = %+v", d)
	}
	if d := None().NewTracker("f").Decide(epoch); d != (Decision{}) {
		t.Fatalf("none decision = %+v", d)
	}
}

func TestHybridTracker_Decide(t *testing.T) {
	p, err := NewHybrid(DefaultHybridConfig())
	if err != nil {
		t.Fatal(err)
	}
	fallback := Decision{KeepAlive: 4 * time.Hour}
	// arrivals returns the arrival times start, start+gap, ... (n of them).
	arrivals := func(start time.Time, gap time.Duration, n int) []time.Time {
		var out []time.Time
		for i := range n {
			out = append(out, start.Add(time.Duration(i)*gap))
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		arrivals []time.Time
		decideAt time.Duration // after the last arrival
		want     Decision
	}{
		{
			name:     "no history",
			decideAt: time.Second,
			want:     fallback,
		},
		{
			name:     "too few samples",
			arrivals: arrivals(epoch, 10*time.Minute, 5), // 4 gaps < MinSamples
			decideAt: time.Second,
			want:     fallback,
		},
		{
			// Gaps of exactly 10m fill bin 10: head 10m*0.9 = 9m, tail
			// 11m*1.1 = 12m6s, both from the last arrival. The instance
			// stays for the rest of the arrival's minute.
			name:     "periodic: unload, pre-warm before the next arrival",
			arrivals: arrivals(epoch, 10*time.Minute, 6),
			decideAt: time.Second,
			want:     Decision{KeepAlive: 59 * time.Second, PreWarm: 9*time.Minute - time.Second, PreWarmKeepAlive: 12*time.Minute + 6*time.Second - 9*time.Minute},
		},
		{
			name:     "periodic, long execution eats into the pre-warm window",
			arrivals: arrivals(epoch, 10*time.Minute, 6),
			decideAt: 3 * time.Minute,
			want:     Decision{PreWarm: 6 * time.Minute, PreWarmKeepAlive: 3*time.Minute + 6*time.Second},
		},
		{
			// Every 20s: only the first arrival of each minute records its
			// gap (20s, bin 0), so head is 0 and the tail 1m*1.1 applies.
			name:     "frequent: keep until the tail",
			arrivals: arrivals(epoch, 20*time.Second, 30),
			decideAt: time.Second,
			want:     Decision{KeepAlive: 66*time.Second - time.Second},
		},
		{
			name:     "idle times beyond the range",
			arrivals: arrivals(epoch, 5*time.Hour, 8),
			decideAt: time.Second,
			want:     fallback,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := p.NewTracker("f")
			for _, at := range tc.arrivals {
				tr.OnInvocation(at)
			}
			last := epoch
			if n := len(tc.arrivals); n > 0 {
				last = tc.arrivals[n-1]
			}
			if got := tr.Decide(last.Add(tc.decideAt)); got != tc.want {
				t.Fatalf("Decide = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestHybridTracker_FlatHistogramFallsBack(t *testing.T) {
	p, _ := NewHybrid(DefaultHybridConfig())
	tr := p.NewTracker("f").(*hybridTracker)
	at := epoch
	tr.OnInvocation(at)
	for gap := 1; gap <= 100; gap++ { // one sample in each of 100 bins: CV about 1.2
		at = at.Add(time.Duration(gap) * time.Minute)
		tr.OnInvocation(at)
	}
	if tr.inRange != 100 || tr.cv() >= 2 {
		t.Fatalf("samples %d, cv %.2f", tr.inRange, tr.cv())
	}
	if d := tr.Decide(at.Add(time.Second)); d != (Decision{KeepAlive: 4 * time.Hour}) {
		t.Fatalf("flat histogram: Decide = %+v, want the fallback", d)
	}
}
