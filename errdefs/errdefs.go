// Package errdefs is kindling's one error vocabulary.
//
// Every package wraps one of these sentinel errors with context
// (fmt.Errorf("deploy %q: %w", name, errdefs.ErrInvalidArgument)); the HTTP
// server translates them to status codes in exactly one place. Failures of a
// function itself (trap, non-zero exit, timeout, out of memory) are reported
// as a *FunctionError, which carries its Kind.
package errdefs

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Test with errors.Is.
var (
	// ErrInvalidArgument is the caller's mistake: a malformed field or artifact.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound means a named function, artifact or invocation does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists means a create collided with an existing object.
	ErrAlreadyExists = errors.New("already exists")
	// ErrTooLarge means a request body or artifact exceeds its limit.
	ErrTooLarge = errors.New("too large")
	// ErrUnavailable means the resource exists but cannot serve now
	// (for example the scheduler's queue is full); the caller may retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrNotImplemented means the operation is not supported by this component.
	ErrNotImplemented = errors.New("not implemented")
	// ErrFailedPrecondition means the system is not in a state that allows the
	// operation (for example a required host binary is missing).
	ErrFailedPrecondition = errors.New("failed precondition")
)

// Kind classifies a failure of a function's own code.
type Kind string

// Function failure kinds, as they appear in API error bodies and metrics.
const (
	KindTrap    Kind = "trap"    // the guest trapped (unreachable, out-of-bounds access, ...)
	KindExit    Kind = "exit"    // the guest exited with a non-zero code
	KindTimeout Kind = "timeout" // the guest ran past its deadline and was stopped
	KindOOM     Kind = "oom"     // the guest exceeded its memory limit
	KindCrash   Kind = "crash"   // the sandbox itself died (process killed, VM crashed)
)

// FunctionError reports that a function ran but failed.
type FunctionError struct {
	Kind     Kind
	ExitCode int    // set for KindExit (and KindOOM when the guest exited)
	Message  string // human-readable reason (trap message, limit, ...)
	Err      error  // underlying cause, if any
}

func (e *FunctionError) Error() string {
	switch e.Kind {
	case KindExit:
		if e.Message != "" {
			return fmt.Sprintf("function exited with code %d: %s", e.ExitCode, e.Message)
		}
		return fmt.Sprintf("function exited with code %d", e.ExitCode)
	default:
		return fmt.Sprintf("function %s: %s", e.Kind, e.Message)
	}
}

func (e *FunctionError) Unwrap() error { return e.Err }

// AsFunctionError returns the *FunctionError in err's chain, if any.
func AsFunctionError(err error) (*FunctionError, bool) {
	var fe *FunctionError
	ok := errors.As(err, &fe)
	return fe, ok
}

// RetryableError carries a hint for how long the caller should wait before
// retrying. It wraps ErrUnavailable or ErrTooLarge-like causes.
type RetryableError struct {
	Err        error
	RetryAfter time.Duration
}

func (e *RetryableError) Error() string { return e.Err.Error() }
func (e *RetryableError) Unwrap() error { return e.Err }

// RetryAfter returns the retry hint in err's chain, or 0.
func RetryAfter(err error) time.Duration {
	var re *RetryableError
	if errors.As(err, &re) {
		return re.RetryAfter
	}
	return 0
}

// KindOf names err's class as API error bodies do: a function failure
// kind, or invalid_argument, not_found, already_exists, too_large,
// unavailable, not_implemented, failed_precondition, canceled, timeout,
// internal.
func KindOf(err error) string {
	if fe, ok := AsFunctionError(err); ok {
		return string(fe.Kind)
	}
	switch {
	case errors.Is(err, ErrInvalidArgument):
		return "invalid_argument"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrAlreadyExists):
		return "already_exists"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrNotImplemented):
		return "not_implemented"
	case errors.Is(err, ErrFailedPrecondition):
		return "failed_precondition"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return string(KindTimeout)
	}
	return "internal"
}
