// Package sandbox defines the driver interface that every kindling sandbox
// implements: in-process WebAssembly, OCI containers, microVMs.
//
// A driver turns a function's artifact into something runnable once
// (Prepare, e.g. compile), starts instances of it (Start), and sends each
// instance requests (Invoke). Every step records its phases into the
// request's phase.Recorder with the shared phase names, so cold starts of
// different sandboxes are comparable. Optional abilities (snapshots,
// pausing) are separate small interfaces, found by type assertion.
package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"time"

	"github.com/kindling-dev/kindling/phase"
)

// Spec is what a driver needs to know about a function.
type Spec struct {
	// Name is the function's name (for logs and errors).
	Name string
	// Artifact is the function's content digest ("sha256:...").
	Artifact string
	// Load reads the artifact's bytes. Drivers call it only when they have no
	// prepared copy cached, and time it as phase.ArtifactLoad.
	Load func() ([]byte, error)
	// MemoryMB is the instance's memory limit.
	MemoryMB int
	// Args are the guest's argv after argv[0] (the function name).
	Args []string
	// Env are the function's own environment variables ("K=V").
	Env []string
	// Mounts are host directories the guest sees (WASI preopens for the
	// wasm sandbox); none by default: functions get no filesystem.
	Mounts []Mount
}

// Mount exposes a host directory to the guest.
type Mount struct {
	HostPath  string
	GuestPath string
	ReadOnly  bool
}

// Request is one invocation's I/O.
type Request struct {
	// Env is the per-request environment (CGI variables) added to Spec.Env.
	Env []string
	// Stdin is the request body; nil means empty.
	Stdin io.Reader
	// Stdout receives the function's response; Stderr its logs.
	Stdout, Stderr io.Writer
	// Phases receives the invocation's phase timings; may be nil.
	Phases *phase.Recorder
}

// Capabilities says what a driver can do, so the scheduler can plan.
type Capabilities struct {
	// SingleUse instances serve exactly one request and are then discarded
	// (a fresh, isolated instance per invocation).
	SingleUse bool
	// MemoryLimit is true when Spec.MemoryMB is enforced.
	MemoryLimit bool
	// CPUShares is true when CPU is limited in proportion to memory.
	CPUShares bool
}

// Driver is one kind of sandbox.
type Driver interface {
	// Name is the runtime name functions use to select this driver ("wasm").
	Name() string
	Capabilities() Capabilities
	// Prepare readies a function for starting instances, e.g. compiles it.
	// It records phase.ArtifactLoad and phase.Compile into rec. An artifact
	// the driver cannot run is an error wrapping errdefs.ErrInvalidArgument
	// with the engine's reason.
	Prepare(ctx context.Context, spec Spec, rec *phase.Recorder) (Prepared, error)
	// Close releases everything the driver holds.
	Close(ctx context.Context) error
}

// Prepared is a function ready to start instances.
type Prepared interface {
	// Start creates an instance. It records phase.Instantiate (and, for
	// sandboxes that boot, their boot phases) into rec.
	Start(ctx context.Context, rec *phase.Recorder) (Instance, error)
	// Close releases the prepared function (e.g. the compiled module).
	Close(ctx context.Context) error
}

// Instance is one running (or ready) copy of a function.
type Instance interface {
	// Invoke runs one request. A function failure is returned as an
	// *errdefs.FunctionError; ctx's deadline is the function's timeout.
	Invoke(ctx context.Context, req *Request) (Result, error)
	// Close stops and deletes the instance.
	Close(ctx context.Context) error
}

// Result describes a completed invocation.
type Result struct {
	ExitCode int
	// Warm is true when the instance was ready before the request (taken
	// from a pool, already in its initial state) rather than created for it.
	Warm bool
	// MemoryBytes is the instance's memory size at the end of the run.
	MemoryBytes uint64
	// TouchedBytes is the memory the instance actually made private
	// (pages it wrote), where the sandbox can tell; 0 if unknown.
	TouchedBytes uint64
	// Duration is the wall time of Invoke.
	Duration time.Duration
}

// StartModer is implemented by a Prepared whose instances can start in
// more than one way (e.g. from a snapshot or from scratch); mode names the
// way chosen and reason says why, when it is not the fastest.
type StartModer interface {
	StartMode() (mode, reason string)
}

// BytesSpec returns a Spec for an artifact held in memory, named name.
func BytesSpec(name string, artifact []byte, memoryMB int) Spec {
	sum := sha256.Sum256(artifact)
	return Spec{
		Name:     name,
		Artifact: "sha256:" + hex.EncodeToString(sum[:]),
		Load:     func() ([]byte, error) { return artifact, nil },
		MemoryMB: memoryMB,
	}
}

// ImageResolver is implemented by drivers whose artifacts live in their own
// store (container images) rather than the daemon's artifact store: Resolve
// turns a reference ("name:tag") into the artifact ID Prepare takes.
type ImageResolver interface {
	Resolve(ref string) (artifact string, err error)
}
