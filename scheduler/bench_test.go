package scheduler

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkAcquireRelease is the hot path: one warm instance, no contention.
func BenchmarkAcquireRelease(b *testing.B) {
	s := New(Options{})
	defer s.Close(context.Background())
	mustRegister(b, s, FunctionConfig{Name: "f", MemoryMB: 64}, &fleet{})
	s.Release(mustAcquire(b, s, "f"), true)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := s.Acquire(ctx, "f")
		if err != nil {
			b.Fatal(err)
		}
		s.Release(l, true)
	}
}

// BenchmarkAcquireReleaseParallel spreads goroutines over many functions:
// with per-function locks they should scale with -cpu.
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	for _, policy := range []string{"fixed", "hybrid"} {
		b.Run(policy, func(b *testing.B) {
			const functions = 64
			pol, err := ParsePolicy(policy)
			if err != nil {
				b.Fatal(err)
			}
			s := New(Options{DefaultPolicy: pol})
			defer s.Close(context.Background())
			names := make([]string, functions)
			for i := range names {
				names[i] = fmt.Sprintf("f%02d", i)
				mustRegister(b, s, FunctionConfig{Name: names[i], MemoryMB: 64}, &fleet{})
				s.Release(mustAcquire(b, s, names[i]), true)
			}
			var seed atomic.Uint64
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				// Each goroutine walks the functions in its own random
				// order (xorshift), so goroutines rarely meet on one function.
				x := seed.Add(0x9E3779B97F4A7C15)
				for pb.Next() {
					x ^= x << 13
					x ^= x >> 7
					x ^= x << 17
					l, err := s.Acquire(ctx, names[x%functions])
					if err != nil {
						b.Error(err)
						return
					}
					s.Release(l, true)
				}
			})
		})
	}
}

// BenchmarkAcquireReleaseParallelOneFunction is the contended case for
// comparison: every goroutine on the same function's lock.
func BenchmarkAcquireReleaseParallelOneFunction(b *testing.B) {
	s := New(Options{})
	defer s.Close(context.Background())
	mustRegister(b, s, FunctionConfig{Name: "f", MemoryMB: 64}, &fleet{})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l, err := s.Acquire(ctx, "f")
			if err != nil {
				b.Error(err)
				return
			}
			s.Release(l, true)
		}
	})
}
