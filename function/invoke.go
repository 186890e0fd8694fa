package function

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/scheduler"
)

// Request is one invocation's input.
type Request struct {
	// Body is the request body, given to the function on stdin.
	Body []byte
	// Env is the per-request environment (the CGI variables).
	Env []string
}

// Result is one invocation's outcome. Err is the function's failure, if
// any (an *errdefs.FunctionError); Stdout holds what it wrote either way.
type Result struct {
	Invocation api.Invocation
	Stdout     []byte
	Err        error
}

var (
	idPrefix  = randomHex(3)
	idCounter atomic.Uint32
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newID returns a unique invocation ID that sorts by creation time.
func newID() string {
	var b [32]byte
	out := strconv.AppendUint(b[:0], uint64(time.Now().UnixNano()), 16)
	out = append(out, '-')
	out = append(out, idPrefix...)
	out = strconv.AppendUint(append(out, '-'), uint64(idCounter.Add(1)), 16)
	return string(out)
}

// Invoke runs function name once. An error is returned for requests that
// could not run (unknown function, unavailable runtime, back-pressure); a
// function that ran and failed is reported in Result.Err with its record.
func (s *Service) Invoke(ctx context.Context, name string, req Request) (*Result, error) {
	res, err := s.run(ctx, name, req, newID())
	if err != nil {
		return nil, err
	}
	s.records.put(res.Invocation)
	return res, nil
}

// run invokes the function and builds the invocation record; the caller
// stores it.
func (s *Service) run(ctx context.Context, name string, req Request, id string) (*Result, error) {
	begin := time.Now()
	rec := phase.NewRecorder()
	inv := api.Invocation{ID: id, Function: name, Status: api.StatusRunning, StartedAt: begin.UTC()}

	var e *entry
	for {
		var ok bool
		if e, ok = s.lookup(name); !ok {
			return nil, fmt.Errorf("function %q: %w", name, errdefs.ErrNotFound)
		}
		if e.acquire() {
			break
		}
	}
	defer e.release()
	if s.metrics != nil {
		g := s.metrics.InFlight.WithLabelValues(name)
		g.Inc()
		defer g.Dec()
	}
	rec.Add(phase.QueueWait, 0, "") // first in the table; the wait is added below

	if _, _, err := e.ensurePrepared(ctx, s, rec); err != nil {
		return nil, err
	}
	// The function's timeout bounds the whole invocation: waiting for an
	// instance, then running.
	tctx, cancel := context.WithTimeout(ctx, e.fn.Timeout())
	defer cancel()
	lease, err := s.sched.Acquire(withRecorder(tctx, rec), name)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = &errdefs.FunctionError{Kind: errdefs.KindTimeout, Message: "no instance became free within the function's timeout", Err: err}
		}
		return nil, fmt.Errorf("function %q: %w", name, err)
	}
	rec.Add(phase.QueueWait, lease.QueueWait()-lease.StartDuration(), "")
	inst := lease.Instance().(sandbox.Instance)

	stdout := &capped{max: MaxResponseBytes}
	stderr := &capped{max: maxStderrBytes}
	live := s.startLive(id)
	live.running.Store(true)
	res, runErr := inst.Invoke(tctx, &sandbox.Request{
		Env:    req.Env,
		Stdin:  bytes.NewReader(req.Body),
		Stdout: live.tee(stdout),
		Stderr: live.tee(stderr),
		Phases: rec,
	})
	cancel()
	s.endLive(id)
	// Cold: the instance was created for this request, not taken ready
	// (from the scheduler's pool, or the sandbox's own pool of reset instances).
	inv.Cold = lease.Cold() && !res.Warm
	closeStart := time.Now()
	// A function failure makes a reusable instance suspect: retire it.
	s.sched.Release(lease, runErr == nil)
	rec.Since(phase.Teardown, closeStart, "")

	if runErr == nil && stdout.overflow {
		runErr = &errdefs.FunctionError{Kind: errdefs.KindExit, ExitCode: res.ExitCode,
			Message: fmt.Sprintf("response larger than %d bytes", MaxResponseBytes)}
	}
	end := time.Now()
	inv.EndedAt = end.UTC()
	inv.DurationNs = end.Sub(begin)
	inv.Phases = rec.Timings()
	inv.ExitCode = res.ExitCode
	inv.StderrTail = tail(stderr.buf.Bytes(), stderrTailBytes)
	outcome := "success"
	if runErr != nil {
		inv.Status = api.StatusFailed
		inv.Error = errorInfo(runErr)
		outcome = inv.Error.Kind
	} else {
		inv.Status = api.StatusSucceeded
	}

	if s.logs != nil && stderr.buf.Len() > 0 {
		if err := s.logs.Append(name, logInstance(e, lease), inv.ID, end, stderr.buf.Bytes()); err != nil {
			s.log.Warn("function log not written", "function", name, "err", err)
		}
	}
	if s.metrics != nil {
		s.metrics.Invocations.WithLabelValues(name, outcome, strconv.FormatBool(inv.Cold)).Inc()
		if inv.Cold {
			s.metrics.ColdStarts.WithLabelValues(name).Inc()
		}
		s.metrics.ObservePhases(e.fn.Runtime, inv.Phases)
	}
	s.traces.record(ctx, inv)

	// A cancelled request is not a function failure.
	if errors.Is(runErr, context.Canceled) {
		return nil, runErr
	}
	return &Result{Invocation: inv, Stdout: stdout.buf.Bytes(), Err: runErr}, nil
}

// errorInfo describes err for an API body.
func errorInfo(err error) *api.ErrorInfo {
	if fe, ok := errdefs.AsFunctionError(err); ok {
		return &api.ErrorInfo{Kind: string(fe.Kind), Message: fe.Error(), ExitCode: fe.ExitCode}
	}
	return &api.ErrorInfo{Kind: "internal", Message: err.Error()}
}

// Invocation returns an invocation record.
func (s *Service) Invocation(id string) (api.Invocation, error) {
	if inv, ok := s.records.pending(id); ok {
		return inv, nil
	}
	inv, err := s.store.GetInvocation(id)
	if err == nil && inv.Status == api.StatusQueued {
		if l, ok := s.live.Load(id); ok && l.(*liveLog).running.Load() {
			inv.Status = api.StatusRunning
		}
	}
	return inv, err
}

// logInstance names the log directory of the instance that served a
// request: its own for reusable instances; for single-use ones (a fresh
// wasm instance per request) one per deployed version, since each lives
// for a single request.
func logInstance(e *entry, lease *scheduler.Lease) string {
	if e.driver == nil || e.driver.Capabilities().SingleUse {
		return "v" + strconv.Itoa(e.fn.Version)
	}
	return "i" + strconv.FormatUint(lease.InstanceID(), 10)
}
