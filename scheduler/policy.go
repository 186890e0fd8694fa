package scheduler

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
)

// DefaultKeepAlive is the keep-alive of the default policy, OpenWhisk's
// fixed ten minutes.
const DefaultKeepAlive = 10 * time.Minute

// Policy decides how long idle instances stay warm and when to pre-warm.
// A Policy is configuration: it holds no per-function state itself, so one
// value can serve many functions, schedulers and simulation runs.
type Policy interface {
	// String names the policy in tables and logs, in the form ParsePolicy accepts.
	String() string
	// NewTracker returns fresh state for one function.
	NewTracker(function string) Tracker
}

// Tracker is one function's policy state. The scheduler feeds it the same
// events in the daemon and in the simulator, always with that function's
// lock held, so implementations need no locking of their own.
type Tracker interface {
	// OnInvocation records that a request for the function arrived at now.
	OnInvocation(now time.Time)
	// Decide is asked when an instance of the function becomes idle at now.
	Decide(now time.Time) Decision
}

// Decision is a policy's answer for an instance that just became idle.
type Decision struct {
	// KeepAlive is how long the instance stays warm, counted from now;
	// 0 closes it at once.
	KeepAlive time.Duration
	// PreWarm, when longer than KeepAlive, predicts the next invocation:
	// if the whole function is quiet (nothing busy, starting or queued),
	// the pool starts fresh instances PreWarm after now, as many as were
	// busy at once in the function's last active period.
	PreWarm time.Duration
	// PreWarmKeepAlive is how long pre-warmed instances stay warm once started.
	PreWarmKeepAlive time.Duration
}

// Fixed returns the classic policy: every idle instance is kept for ttl
// (OpenWhisk and AWS Lambda use about ten minutes) and never pre-warmed.
// Fixed(0) is None().
func Fixed(ttl time.Duration) Policy {
	if ttl < 0 {
		ttl = 0
	}
	return fixedPolicy{ttl: ttl}
}

// None returns the policy without keep-alive: an instance is closed as soon
// as it has nothing to do. Only a request already queued when an instance
// frees up is served warm; every other one is a cold start.
func None() Policy { return fixedPolicy{} }

type fixedPolicy struct{ ttl time.Duration }

func (p fixedPolicy) String() string {
	if p.ttl == 0 {
		return "none"
	}
	return "fixed:" + formatDuration(p.ttl)
}

func (p fixedPolicy) NewTracker(string) Tracker { return p }

func (fixedPolicy) OnInvocation(time.Time) {}

func (p fixedPolicy) Decide(time.Time) Decision { return Decision{KeepAlive: p.ttl} }

// ParsePolicy parses a policy name:
//
//	fixed              fixed keep-alive of DefaultKeepAlive (10m)
//	fixed:5m           fixed keep-alive of the given duration
//	none               close after every use
//	hybrid             the hybrid histogram policy with DefaultHybridConfig
//	hybrid:k=v,...     hybrid with overrides; keys: bin, range, head, tail,
//	                   margin, min, cv, oob, fallback (see HybridConfig)
func ParsePolicy(s string) (Policy, error) {
	name, arg, hasArg := strings.Cut(strings.TrimSpace(s), ":")
	switch strings.ToLower(name) {
	case "none":
		if hasArg {
			return nil, fmt.Errorf("policy %q: none takes no argument: %w", s, errdefs.ErrInvalidArgument)
		}
		return None(), nil
	case "fixed":
		if !hasArg {
			return Fixed(DefaultKeepAlive), nil
		}
		d, err := time.ParseDuration(arg)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("policy %q: bad keep-alive %q: %w", s, arg, errdefs.ErrInvalidArgument)
		}
		return Fixed(d), nil
	case "hybrid":
		cfg := DefaultHybridConfig()
		if hasArg {
			if err := cfg.set(arg); err != nil {
				return nil, fmt.Errorf("policy %q: %w", s, err)
			}
		}
		return NewHybrid(cfg)
	default:
		return nil, fmt.Errorf("unknown policy %q (want fixed, fixed:<duration>, none or hybrid): %w", s, errdefs.ErrInvalidArgument)
	}
}

// set applies comma-separated key=value overrides.
func (c *HybridConfig) set(args string) error {
	for _, kv := range strings.Split(args, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return fmt.Errorf("hybrid option %q is not key=value: %w", kv, errdefs.ErrInvalidArgument)
		}
		var err error
		switch k {
		case "bin":
			c.BinWidth, err = time.ParseDuration(v)
		case "range":
			c.Range, err = time.ParseDuration(v)
		case "fallback":
			c.Fallback, err = time.ParseDuration(v)
		case "head":
			c.HeadPercentile, err = strconv.ParseFloat(v, 64)
		case "tail":
			c.TailPercentile, err = strconv.ParseFloat(v, 64)
		case "margin":
			c.Margin, err = strconv.ParseFloat(v, 64)
		case "cv":
			c.CVThreshold, err = strconv.ParseFloat(v, 64)
		case "oob":
			c.MaxOOBFraction, err = strconv.ParseFloat(v, 64)
		case "min":
			c.MinSamples, err = strconv.Atoi(v)
		default:
			return fmt.Errorf("unknown hybrid option %q: %w", k, errdefs.ErrInvalidArgument)
		}
		if err != nil {
			return fmt.Errorf("hybrid option %s=%q: %v: %w", k, v, err, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// formatDuration prints 10m rather than 10m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
