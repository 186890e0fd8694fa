// Package quantile computes the medians and percentiles of kindling's
// benchmark tables and simulator reports, so that each is defined once.
//
// Two definitions of a percentile are in use, each where it was published:
// the nearest rank (the oci, shim and microVM tables and the simulator) and
// linear interpolation between the closest ranks (the `kindling bench`
// suite). A median is the same in both: the middle value, or the mean of
// the two middle values.
package quantile

import (
	"math"
	"slices"
)

// Number is what the functions summarize: durations, byte counts, scores.
type Number interface {
	~int | ~int64 | ~uint64 | ~float64
}

// Sorted returns a sorted copy of v.
func Sorted[T Number](v []T) []T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s
}

// Median returns the median of sorted values: the middle one, or the mean
// of the two middle ones; 0 for none.
func Median[T Number](sorted []T) T {
	n := len(sorted)
	switch {
	case n == 0:
		return 0
	case n%2 == 1:
		return sorted[n/2]
	}
	a, b := sorted[n/2-1], sorted[n/2]
	return a + (b-a)/2 // no overflow, and exact for floats
}

// NearestRank returns the p-quantile (0 < p ≤ 1) of sorted values by the
// nearest-rank method: the smallest value with at least a fraction p of
// the values at or below it. 0 for none.
func NearestRank[T Number](sorted []T, p float64) T {
	if len(sorted) == 0 {
		return 0
	}
	// The epsilon keeps p·n that is an integer but for rounding (0.9·10)
	// from going up a rank.
	rank := int(math.Ceil(p*float64(len(sorted))-1e-9)) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// Interpolated returns the p-quantile (0 ≤ p ≤ 1) of sorted values,
// interpolating linearly between the two closest ranks (the definition of
// NumPy's default and of R's type 7). 0 for none.
func Interpolated[T ~int64](sorted []T, p float64) T {
	if len(sorted) == 0 {
		return 0
	}
	rank := p * float64(len(sorted)-1)
	lo := int(math.Floor(rank))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	lo = max(lo, 0)
	frac := rank - float64(lo)
	return sorted[lo] + T(math.Round(frac*float64(sorted[lo+1]-sorted[lo])))
}

// Summary describes a sample: its median, nearest-rank 90th percentile,
// extremes and size.
type Summary[T Number] struct {
	Median, P90, Min, Max T
	N                     int
}

// Summarize describes v, which it does not modify; the zero Summary for
// none.
func Summarize[T Number](v []T) Summary[T] {
	if len(v) == 0 {
		return Summary[T]{}
	}
	s := Sorted(v)
	return Summary[T]{Median: Median(s), P90: NearestRank(s, 0.9), Min: s[0], Max: s[len(s)-1], N: len(s)}
}
