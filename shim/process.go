package shim

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"

	kerrdefs "github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/sandbox"
)

// Exit statuses of processes that did not exit by themselves, chosen as a
// Linux process dying the same way would report them.
const (
	exitTrap = 128 + uint32(syscall.SIGABRT) // the guest trapped (134, as wasmtime reports it)
	exitOOM  = 128 + uint32(syscall.SIGKILL) // out of memory (137, as the OOM killer's victim)
	exitFail = 1                             // the engine failed to run the guest
)

// runner is what a process runs.
type runner interface {
	// run runs until the program ends or ctx is canceled (the process was
	// killed), with the process's streams.
	run(ctx context.Context, io *stdio) result
	// close releases what the runner holds (a prepared module).
	close(ctx context.Context)
	// memoryBytes is the largest memory a finished run used; 0 if unknown.
	memoryBytes() uint64
}

// result is how a run ended.
type result struct {
	status   uint32
	oom      bool // the guest exceeded its memory limit
	canceled bool // the run was stopped by a signal
}

// process is one process of a task: its init process or an exec. It is
// created (Create, Exec), then running (Start), then stopped; a stopped
// process stays until deleted so Wait and State can report its exit.
type process struct {
	id     string // exec ID; "" for the init process
	paths  stdioPaths
	io     *stdio
	runner runner

	mu       sync.Mutex
	state    tasktypes.Status
	status   uint32
	exitedAt time.Time
	signal   syscall.Signal // the signal that stopped it, if one did
	cancel   context.CancelFunc
	done     chan struct{} // closed once stopped
}

func newProcess(id string, paths stdioPaths, io *stdio, r runner) *process {
	return &process{id: id, paths: paths, io: io, runner: r, state: tasktypes.Status_CREATED, done: make(chan struct{})}
}

// start starts the runner. started is called (to publish the start
// event) before the runner can finish, and exited after it finished, with
// the process already stopped but before waiters are released.
func (p *process) start(ctx context.Context, started func(), exited func(result)) error {
	p.mu.Lock()
	if p.state != tasktypes.Status_CREATED {
		st := p.state
		p.mu.Unlock()
		return fmt.Errorf("process is %s, not created: %w", statusName(st), errdefs.ErrFailedPrecondition)
	}
	ctx, cancel := context.WithCancel(ctx)
	p.state, p.cancel = tasktypes.Status_RUNNING, cancel
	p.mu.Unlock()
	started()
	go func() {
		res := p.runner.run(ctx, p.io)
		cancel()
		p.finish(res, exited)
	}()
	return nil
}

// finish records the exit, closes the streams (containerd's readers see
// EOF before anyone learns of the exit), reports it, and releases waiters.
func (p *process) finish(res result, exited func(result)) {
	p.io.close()
	p.mu.Lock()
	if res.canceled && p.signal != 0 {
		res.status = 128 + uint32(p.signal)
	}
	p.state, p.status, p.exitedAt = tasktypes.Status_STOPPED, res.status, time.Now()
	p.mu.Unlock()
	exited(res)
	close(p.done)
}

// kill delivers sig. A wasm guest cannot handle signals, so a signal
// whose default action ends a Linux process stops it, signals ignored by
// default do nothing, and stop signals are refused (pausing is not
// supported). A created process that is killed stops without running.
func (p *process) kill(sig syscall.Signal, exited func(result)) error {
	switch signalAction(sig) {
	case actionIgnore:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.state == tasktypes.Status_STOPPED {
			return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
		}
		return nil
	case actionStop:
		return fmt.Errorf("signal %d would pause the process; pausing wasm processes is not supported: %w", sig, errdefs.ErrNotImplemented)
	}
	p.mu.Lock()
	switch p.state {
	case tasktypes.Status_STOPPED:
		p.mu.Unlock()
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	case tasktypes.Status_CREATED:
		p.signal = sig
		p.state = tasktypes.Status_RUNNING // finish moves it to stopped
		p.mu.Unlock()
		p.finish(result{canceled: true}, exited)
		return nil
	default:
		if p.signal == 0 {
			p.signal = sig
		}
		cancel := p.cancel
		p.mu.Unlock()
		cancel()
		return nil
	}
}

// wait blocks until the process stopped or ctx ends.
func (p *process) wait(ctx context.Context) (uint32, time.Time, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return 0, time.Time{}, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.exitedAt, nil
}

// snapshot returns the process's state, exit status and exit time.
func (p *process) snapshot() (tasktypes.Status, uint32, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state, p.status, p.exitedAt
}

func statusName(s tasktypes.Status) string {
	switch s {
	case tasktypes.Status_CREATED:
		return "created"
	case tasktypes.Status_RUNNING:
		return "running"
	case tasktypes.Status_STOPPED:
		return "stopped"
	}
	return s.String()
}

type action int

const (
	actionTerminate action = iota
	actionIgnore
	actionStop
)

// signalAction is the default action of sig for a Linux process.
func signalAction(sig syscall.Signal) action {
	switch sig {
	case 0, syscall.SIGCHLD, syscall.SIGCONT, syscall.SIGURG, syscall.SIGWINCH:
		return actionIgnore
	case syscall.SIGSTOP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU:
		return actionStop
	}
	return actionTerminate
}

// wasmRunner runs a prepared wasm module once.
type wasmRunner struct {
	prepared sandbox.Prepared
	mem      atomic.Uint64
}

func (w *wasmRunner) run(ctx context.Context, io *stdio) result {
	inst, err := w.prepared.Start(ctx, nil)
	if err == nil {
		var res sandbox.Result
		res, err = inst.Invoke(ctx, &sandbox.Request{Stdin: io.stdin, Stdout: io.stdout, Stderr: io.stderr})
		_ = inst.Close(context.WithoutCancel(ctx))
		w.mem.Store(max(w.mem.Load(), res.MemoryBytes))
	}
	return classify(ctx, err, io.stderr)
}

func (w *wasmRunner) close(ctx context.Context) { _ = w.prepared.Close(ctx) }

func (w *wasmRunner) memoryBytes() uint64 { return w.mem.Load() }

// classify turns the sandbox's outcome into an exit status. Failures the
// guest did not report itself (a trap, running out of memory) are
// explained on its stderr, where the container's logs show them.
func classify(ctx context.Context, err error, stderr io.Writer) result {
	if err == nil {
		return result{}
	}
	if ctx.Err() != nil {
		return result{status: 128 + uint32(syscall.SIGKILL), canceled: true}
	}
	fe, ok := kerrdefs.AsFunctionError(err)
	switch {
	case ok && fe.Kind == kerrdefs.KindExit:
		return result{status: uint32(fe.ExitCode)}
	case ok && fe.Kind == kerrdefs.KindOOM:
		fmt.Fprintf(stderr, "kindling: %s\n", fe.Message)
		return result{status: exitOOM, oom: true}
	case ok && fe.Kind == kerrdefs.KindTrap:
		fmt.Fprintf(stderr, "kindling: wasm trap: %s\n", fe.Message)
		return result{status: exitTrap}
	default:
		fmt.Fprintf(stderr, "kindling: %v\n", err)
		return result{status: exitFail}
	}
}

// pauseRunner is the CRI sandbox (pause) container's process: it runs
// nothing and lasts until it is killed.
type pauseRunner struct{}

func (pauseRunner) run(ctx context.Context, _ *stdio) result {
	<-ctx.Done()
	return result{status: 128 + uint32(syscall.SIGKILL), canceled: true}
}

func (pauseRunner) close(context.Context) {}

func (pauseRunner) memoryBytes() uint64 { return 0 }
