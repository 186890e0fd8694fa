// Package phase names and times the phases of an invocation.
//
// Every sandbox reports its cold start with the same phase names, so the
// invocation record, the Server-Timing header, the metrics and the CLI's
// phase table can be compared side by side across sandboxes.
package phase

import (
	"strings"
	"sync"
	"time"
)

// Name is the name of one phase of an invocation.
type Name string

// The phases of an invocation, in the order they happen.
const (
	QueueWait    Name = "queue"       // waiting for a slot (scheduler queue)
	ArtifactLoad Name = "load"        // reading the function's artifact from the store
	Compile      Name = "compile"     // compiling (or loading from cache) the artifact
	Snapshot     Name = "snapshot"    // initializing a function and capturing its snapshot (at deploy)
	Instantiate  Name = "instantiate" // creating a fresh instance (memory, globals, imports)
	Restore      Name = "restore"     // restoring an instance's state from a snapshot
	Startup      Name = "startup"     // guest start-up, until the function's own code runs
	Run          Name = "run"         // the function's code, until it returns
	Teardown     Name = "teardown"    // releasing the instance

	// Phases of sandboxes that boot something (containers, VMs).
	Unpack Name = "unpack" // importing an image: its new layers unpacked
	Rootfs Name = "rootfs" // mounting an instance's root file system
	Bundle Name = "bundle" // writing the runtime bundle (config.json, sockets)
	Ready  Name = "ready"  // from the runtime's return until the agent signals readiness

	// Phases of the microVM sandbox.
	Boot       Name = "boot"        // a guest kernel booting to its init
	AgentReady Name = "agent-ready" // from the VM running until its agent signals readiness
	Prefetch   Name = "prefetch"    // reading a snapshot's working set ahead of the guest
)

// Timing is the measured duration of one phase.
type Timing struct {
	Name     Name          `json:"name"`
	Duration time.Duration `json:"durationNs"`
	// Detail qualifies the phase, for example "cache=disk" for Compile.
	Detail string `json:"detail,omitempty"`
}

// Recorder collects phase timings for one invocation. It is safe for
// concurrent use; a nil *Recorder records nothing.
type Recorder struct {
	mu      sync.Mutex
	timings []Timing
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{timings: make([]Timing, 0, 8)} }

// Add records a phase. A phase added twice accumulates its duration.
func (r *Recorder) Add(name Name, d time.Duration, detail string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.timings {
		if r.timings[i].Name == name {
			r.timings[i].Duration += d
			if detail != "" {
				r.timings[i].Detail = detail
			}
			return
		}
	}
	r.timings = append(r.timings, Timing{Name: name, Duration: d, Detail: detail})
}

// Since records a phase that started at start and ends now, and returns now
// so calls can be chained: t = r.Since(Compile, t, "").
func (r *Recorder) Since(name Name, start time.Time, detail string) time.Time {
	now := time.Now()
	r.Add(name, now.Sub(start), detail)
	return now
}

// Timings returns a copy of the recorded phases in the order first recorded.
func (r *Recorder) Timings() []Timing {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Timing(nil), r.timings...)
}

// Total returns the sum of all phase durations.
func Total(ts []Timing) time.Duration {
	var d time.Duration
	for _, t := range ts {
		d += t.Duration
	}
	return d
}

// ServerTiming formats timings as a W3C Server-Timing header value
// (durations in milliseconds), e.g. `compile;dur=0.021;desc="cache=memory"`.
func ServerTiming(ts []Timing) string {
	var b strings.Builder
	for i, t := range ts {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(t.Name))
		b.WriteString(";dur=")
		b.WriteString(strconvMillis(t.Duration))
		if t.Detail != "" {
			b.WriteString(`;desc="`)
			b.WriteString(strings.ReplaceAll(t.Detail, `"`, `'`))
			b.WriteString(`"`)
		}
	}
	return b.String()
}
