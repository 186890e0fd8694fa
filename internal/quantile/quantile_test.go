package quantile

import (
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []int64
		want int64
	}{
		{nil, 0},
		{[]int64{7}, 7},
		{[]int64{1, 3}, 2},
		{[]int64{1, 2, 9}, 2},
		{[]int64{1, 2, 4, 9}, 3},
		{[]int64{math64 - 2, math64}, math64 - 1}, // no overflow
	} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

const math64 = 1<<63 - 1

func TestNearestRank(t *testing.T) {
	ten := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		in   []int
		p    float64
		want int
	}{
		{nil, 0.9, 0},
		{[]int{5}, 0.9, 5},
		{ten, 0.9, 9}, // 0.9·10 is 9 exactly: the 9th value
		{ten, 0.5, 5},
		{ten, 0.99, 10},
		{ten, 1, 10},
		{ten, 0.01, 1},
		{[]int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 0.9, 10}, // ceil(9.9) = 10th
	} {
		if got := NearestRank(tc.in, tc.p); got != tc.want {
			t.Errorf("NearestRank(%v, %v) = %d, want %d", tc.in, tc.p, got, tc.want)
		}
	}
	// The formula the oci and shim tables used before: s[(9n+9)/10-1].
	for n := 1; n <= 200; n++ {
		s := make([]int, n)
		for i := range s {
			s[i] = i
		}
		if got, want := NearestRank(s, 0.9), s[(n*9+9)/10-1]; got != want {
			t.Errorf("n=%d: p90 %d, want %d", n, got, want)
		}
	}
}

func TestInterpolated(t *testing.T) {
	s := []time.Duration{10, 20, 30, 40}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{0, 10}, {0.5, 25}, {0.9, 37}, {1, 40}} {
		if got := Interpolated(s, tc.p); got != tc.want {
			t.Errorf("Interpolated(%v, %v) = %d, want %d", s, tc.p, got, tc.want)
		}
	}
	if got := Interpolated([]int64(nil), 0.5); got != 0 {
		t.Errorf("Interpolated(nil) = %d", got)
	}
}

func TestSummarize(t *testing.T) {
	in := []time.Duration{5, 1, 4, 2, 3}
	got := Summarize(in)
	want := Summary[time.Duration]{Median: 3, P90: 5, Min: 1, Max: 5, N: 5}
	if got != want {
		t.Fatalf("Summarize(%v) = %+v, want %+v", in, got, want)
	}
	if in[0] != 5 {
		t.Fatal("Summarize sorted its input")
	}
	var zero Summary[uint64]
	if Summarize([]uint64(nil)) != zero {
		t.Fatal("Summarize(nil) is not the zero Summary")
	}
}
