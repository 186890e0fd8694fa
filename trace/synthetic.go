package trace

import (
	"fmt"
	"math"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
)

// SyntheticConfig describes a synthetic bursty workload. Each function gets
// a Poisson base rate drawn log-uniformly from [MinRate, MaxRate]; bursts
// start as a Poisson process of BurstsPerHour, last an exponentially
// distributed time of mean BurstLength, and raise the function's rate to
// BurstFactor times its base rate (at least 1/s). Zero fields take the
// defaults in brackets.
type SyntheticConfig struct {
	Seed             uint64
	Functions        int           // [10]
	Length           time.Duration // [1h]
	MinRate, MaxRate float64       // base invocations per second [0.001, 1]
	BurstsPerHour    float64       // per function [2]
	BurstLength      time.Duration // mean [30s]
	BurstFactor      float64       // [20]
	MeanDuration     time.Duration // mean execution time, exponential [200ms]
	MemoryMB         []int         // sizes, chosen per function [128, 256, 512]
	MaxInvocations   int           // refuse to generate more [10,000,000]
}

func (c *SyntheticConfig) defaults() {
	if c.Functions == 0 {
		c.Functions = 10
	}
	if c.Length == 0 {
		c.Length = time.Hour
	}
	if c.MinRate == 0 && c.MaxRate == 0 {
		c.MinRate, c.MaxRate = 0.001, 1
	}
	if c.BurstsPerHour == 0 {
		c.BurstsPerHour = 2
	}
	if c.BurstLength == 0 {
		c.BurstLength = 30 * time.Second
	}
	if c.BurstFactor == 0 {
		c.BurstFactor = 20
	}
	if c.MeanDuration == 0 {
		c.MeanDuration = 200 * time.Millisecond
	}
	if len(c.MemoryMB) == 0 {
		c.MemoryMB = []int{128, 256, 512}
	}
	if c.MaxInvocations == 0 {
		c.MaxInvocations = 10_000_000
	}
}

// Synthetic generates a seeded bursty trace, sorted by arrival. The same
// config always gives the same trace.
func Synthetic(cfg SyntheticConfig) ([]Invocation, error) {
	cfg.defaults()
	switch {
	case cfg.Functions < 0 || cfg.Length < 0 || cfg.BurstsPerHour < 0 || cfg.BurstLength < 0 || cfg.MeanDuration < 0:
		return nil, fmt.Errorf("synthetic trace: negative parameter: %w", errdefs.ErrInvalidArgument)
	case !(cfg.MinRate > 0 && cfg.MinRate <= cfg.MaxRate):
		return nil, fmt.Errorf("synthetic trace: need 0 < min rate <= max rate, got %v and %v: %w", cfg.MinRate, cfg.MaxRate, errdefs.ErrInvalidArgument)
	case cfg.BurstFactor < 1:
		return nil, fmt.Errorf("synthetic trace: burst factor %v below 1: %w", cfg.BurstFactor, errdefs.ErrInvalidArgument)
	}
	for _, m := range cfg.MemoryMB {
		if m <= 0 {
			return nil, fmt.Errorf("synthetic trace: memory size %d MB: %w", m, errdefs.ErrInvalidArgument)
		}
	}
	var out []Invocation
	length := cfg.Length.Seconds()
	for i := range cfg.Functions {
		name := fmt.Sprintf("fn-%03d", i)
		rng := rngFor(cfg.Seed, name)
		rate := cfg.MinRate * math.Pow(cfg.MaxRate/cfg.MinRate, rng.Float64())
		mem := cfg.MemoryMB[rng.IntN(len(cfg.MemoryMB))]
		emit := func(from, to, rate float64) error {
			if rate <= 0 {
				return nil
			}
			for t := from + rng.ExpFloat64()/rate; t < to; t += rng.ExpFloat64() / rate {
				if len(out) >= cfg.MaxInvocations {
					return fmt.Errorf("synthetic trace: more than %d invocations: %w", cfg.MaxInvocations, errdefs.ErrInvalidArgument)
				}
				d := time.Duration(rng.ExpFloat64() * float64(cfg.MeanDuration))
				out = append(out, Invocation{Function: name, Arrival: seconds(t), Duration: d, MemoryMB: mem})
			}
			return nil
		}
		if err := emit(0, length, rate); err != nil {
			return nil, err
		}
		if cfg.BurstsPerHour == 0 || cfg.BurstLength == 0 {
			continue
		}
		burstRate := cfg.BurstsPerHour / 3600
		extra := max(rate*cfg.BurstFactor, 1) - rate
		for t := rng.ExpFloat64() / burstRate; t < length; t += rng.ExpFloat64() / burstRate {
			end := min(t+rng.ExpFloat64()*cfg.BurstLength.Seconds(), length)
			if err := emit(t, end, extra); err != nil {
				return nil, err
			}
		}
	}
	Sort(out)
	return out, nil
}
