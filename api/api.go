// Package api holds the types of kindling's HTTP API (/v1), shared by the
// server, the Go client and the CLI. It is a leaf: it imports nothing of
// kindling but the phase names.
package api

import (
	"time"

	"github.com/kindling-dev/kindling/phase"
)

// Defaults applied to a FunctionSpec that leaves a field empty.
const (
	DefaultRuntime   = "wasm"
	DefaultMemoryMB  = 128
	DefaultTimeoutMs = 30_000
	MaxMemoryMB      = 4096
	MaxTimeoutMs     = 15 * 60 * 1000
	// DefaultMaxBodyBytes bounds invocation request bodies (413 beyond).
	DefaultMaxBodyBytes = 6 << 20
)

// Response headers set on every invocation.
const (
	HeaderInvocationID = "X-Kindling-Invocation-Id"
	HeaderColdStart    = "X-Kindling-Cold-Start"
	HeaderServerTiming = "Server-Timing"
)

// FunctionSpec is what a user deploys (PUT /v1/functions/{name}).
type FunctionSpec struct {
	Runtime  string `json:"runtime" yaml:"runtime"`
	Artifact string `json:"artifact,omitempty" yaml:"artifact"`
	// Image names an imported container image ("name:tag"), for sandboxes
	// that run images (runtime "oci"); deploying resolves it to Artifact.
	Image     string            `json:"image,omitempty" yaml:"image"`
	MemoryMB  int               `json:"memoryMB,omitempty" yaml:"memoryMB"`
	TimeoutMs int               `json:"timeoutMs,omitempty" yaml:"timeoutMs"`
	Env       map[string]string `json:"env,omitempty" yaml:"env"`
	Args      []string          `json:"args,omitempty" yaml:"args"`

	// Scheduling. KeepAlive is a policy: "fixed" (10 minutes), "fixed:5m",
	// "none", "hybrid" (Azure's hybrid histogram); empty means the daemon's
	// default. MinInstances are kept started; MaxInstances caps them (0: the
	// memory budget is the cap). QueueSize bounds requests waiting for an
	// instance (0: the default of 64). Concurrency is the requests one
	// instance serves at once (single-use sandboxes such as wasm serve 1).
	KeepAlive    string `json:"keepAlive,omitempty" yaml:"keepAlive"`
	MinInstances int    `json:"minInstances,omitempty" yaml:"minInstances"`
	MaxInstances int    `json:"maxInstances,omitempty" yaml:"maxInstances"`
	QueueSize    int    `json:"queueSize,omitempty" yaml:"queueSize"`
	Concurrency  int    `json:"concurrency,omitempty" yaml:"concurrency"`
}

// Timeout returns the spec's timeout as a duration.
func (s FunctionSpec) Timeout() time.Duration { return time.Duration(s.TimeoutMs) * time.Millisecond }

// Start modes of a function's instances (Function.StartMode).
const (
	StartSnapshot = "snapshot" // restored from a snapshot taken after initialization
	StartCommand  = "command"  // started from scratch for every invocation
)

// Function is a deployed function.
type Function struct {
	Name string `json:"name"`
	FunctionSpec
	// StartMode says how instances start, and StartModeReason why a
	// function does not use the fastest way.
	StartMode       string    `json:"startMode,omitempty"`
	StartModeReason string    `json:"startModeReason,omitempty"`
	Version         int       `json:"version"`
	CreatedAt       time.Time `json:"createdAt"`
	UpdatedAt       time.Time `json:"updatedAt"`
}

// ArtifactRef answers POST /v1/artifacts.
type ArtifactRef struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Invocation statuses.
const (
	StatusQueued    = "queued" // accepted asynchronously, not started
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// Invocation is the record of one invocation (GET /v1/invocations/{id}).
type Invocation struct {
	ID         string         `json:"id"`
	Function   string         `json:"function"`
	Status     string         `json:"status"`
	Cold       bool           `json:"coldStart"`
	StartedAt  time.Time      `json:"startedAt"`
	EndedAt    time.Time      `json:"endedAt,omitzero"`
	DurationNs time.Duration  `json:"durationNs"`
	Phases     []phase.Timing `json:"phases"`
	ExitCode   int            `json:"exitCode"`
	HTTPStatus int            `json:"httpStatus,omitempty"`
	Error      *ErrorInfo     `json:"error,omitempty"`
	StderrTail string         `json:"stderrTail,omitempty"`
	// Async marks an invocation accepted with 202; its Response is kept.
	Async    bool      `json:"async,omitempty"`
	Response *Response `json:"response,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
}

// Response is the function's response to an asynchronous invocation, as
// the HTTP trigger would have served it.
type Response struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    []byte            `json:"body"`
}

// ErrorInfo describes a failure. Kind is one of the function failure kinds
// (trap, exit, timeout, oom, crash) or a request error kind
// (invalid_argument, not_found, already_exists, too_large, unavailable,
// not_implemented, failed_precondition, canceled, internal).
type ErrorInfo struct {
	Kind         string `json:"kind"`
	Message      string `json:"message"`
	ExitCode     int    `json:"exitCode,omitempty"`
	InvocationID string `json:"invocationId,omitempty"`
	StderrTail   string `json:"stderrTail,omitempty"`
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error ErrorInfo `json:"error"`
}

// FunctionList answers GET /v1/functions.
type FunctionList struct {
	Functions []Function `json:"functions"`
}

// ImageRef answers POST /v1/images: an imported container image.
type ImageRef struct {
	ID    string   `json:"id"`
	Names []string `json:"names"`
}
