package api

import (
	"time"

	"github.com/kindling-dev/kindling/phase"
)

// The types below are the wire form of the microvm sandbox's VM and
// snapshot API (/v1/vms, /v1/snapshots), served by a daemon started with
// --microvm. Package sandbox/microvm uses them as its own (by alias), the
// server serves them and the client sends them. The page sets are in
// pageset.go.

// Accel is a QEMU accelerator.
type Accel string

// The accelerators the driver can use.
const (
	AccelKVM Accel = "kvm" // hardware virtualization through /dev/kvm
	AccelTCG Accel = "tcg" // software emulation: slow, runs anywhere
)

// Prefetch is how a restore fetches a snapshot's pages ahead of the guest.
type Prefetch string

// Prefetch modes.
const (
	// PrefetchNone lets the guest fault its pages in as it touches them.
	PrefetchNone Prefetch = "none"
	// PrefetchLoadingSet asks the kernel to read the snapshot's loading
	// set into the page cache (posix_fadvise WILLNEED, in recorded order)
	// and starts the VM at once, the reads racing the guest: FaaSnap.
	PrefetchLoadingSet Prefetch = "loading-set"
	// PrefetchWorkingSet reads the snapshot's working set into the page
	// cache with parallel readers while QEMU starts, and resumes the guest
	// when it is all in: REAP.
	PrefetchWorkingSet Prefetch = "working-set"
)

// VMConfig describes a VM to create: booted from a function, or restored
// from a snapshot.
type VMConfig struct {
	// ID names the VM; by default one is generated.
	ID string `json:"id,omitempty"`
	// Function is the function to boot a VM for: in POST /v1/vms, the
	// name of a deployed function of runtime microvm; to the microvm
	// sandbox's Manager, the path of a static linux/amd64 executable.
	// Exactly one of Function and Snapshot is set.
	Function string `json:"function,omitempty"`
	// MemoryMB is a booted VM's memory (default the function's, or the
	// sandbox's); a restored VM has its snapshot's.
	MemoryMB int `json:"memoryMB,omitempty"`
	// Snapshot is the snapshot to restore the VM from.
	Snapshot string `json:"snapshot,omitempty"`
	// Prefetch is how a restore prefetches the snapshot's pages.
	Prefetch Prefetch `json:"prefetch,omitempty"`
}

// VMInfo describes a running VM.
type VMInfo struct {
	ID string `json:"id"`
	// State is "running", or "stopped" when the guest died.
	State    string `json:"state"`
	Error    string `json:"error,omitempty"`
	PID      int    `json:"pid"`
	Function string `json:"function,omitempty"`
	Snapshot string `json:"snapshot,omitempty"`
	MemoryMB int    `json:"memoryMB"`
	Accel    Accel  `json:"accel"`
	// Snapshottable is true for booted VMs (their RAM is their own file).
	Snapshottable bool           `json:"snapshottable"`
	Created       time.Time      `json:"created"`
	Invocations   int            `json:"invocations"`
	Start         []phase.Timing `json:"start"`
}

// SnapshotInfo describes a snapshot.
type SnapshotInfo struct {
	ID       string    `json:"id"`
	Function string    `json:"function,omitempty"`
	MemoryMB int       `json:"memoryMB"`
	Accel    Accel     `json:"accel"`
	Created  time.Time `json:"created"`
	// Template is true for a function template of the Driver: it goes
	// away with the Driver.
	Template bool   `json:"template,omitempty"`
	FromVM   string `json:"fromVM,omitempty"`
	// StateBytes is the size of the device state; the memory file is
	// MemoryMB.
	StateBytes int64 `json:"stateBytes"`
	// CachedBytes is how much of the memory file is in the page cache.
	CachedBytes     int64  `json:"cachedBytes"`
	LoadingSetPages uint64 `json:"loadingSetPages"`
	WorkingSetPages uint64 `json:"workingSetPages"`
}

// VMInvokeRequest is one invocation of a VM.
type VMInvokeRequest struct {
	Stdin []byte   `json:"stdin,omitempty"`
	Env   []string `json:"env,omitempty"`
	Args  []string `json:"args,omitempty"`
	// TimeoutMs bounds the invocation (default 30 s).
	TimeoutMs int `json:"timeoutMs,omitempty"`
}

// VMInvokeResult is an invocation's outcome. A function that failed also
// returns an *errdefs.FunctionError from the microvm sandbox's call; the
// HTTP API answers an error body instead, its phases in Server-Timing.
type VMInvokeResult struct {
	// VM is the VM that served the invocation; empty when it was deleted
	// after it.
	VM       string         `json:"vm"`
	Stdout   []byte         `json:"stdout"`
	Stderr   []byte         `json:"stderr"`
	ExitCode int            `json:"exitCode"`
	Phases   []phase.Timing `json:"phases"`
}

// RestoreOptions say how InvokeSnapshot restores its VM.
type RestoreOptions struct {
	Prefetch Prefetch `json:"prefetch,omitempty"`
	// DropCache evicts the snapshot's files from the page cache first, to
	// measure a restore from disk.
	DropCache bool `json:"dropCache,omitempty"`
	// RecordLoadingSet and RecordWorkingSet record, during this
	// invocation, the snapshot's loading set (mincore scans; meaningful
	// after DropCache) and working set (the pages the VM mapped), replacing
	// what the snapshot had.
	RecordLoadingSet bool `json:"recordLoadingSet,omitempty"`
	RecordWorkingSet bool `json:"recordWorkingSet,omitempty"`
	// Keep leaves the VM running after the invocation; by default it is
	// deleted.
	Keep bool `json:"keep,omitempty"`
}
