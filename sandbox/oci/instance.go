package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kindling-dev/kindling/agent"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
)

// killGrace is how long past a request's deadline the driver waits for
// the agent to report the function stopped before it kills the container.
const killGrace = 500 * time.Millisecond

// cleanupTimeout bounds the runtime commands that tear an instance down.
const cleanupTimeout = 30 * time.Second

// socketPath is where the instance id of a driver rooted at root listens
// for its agent.
func socketPath(root, id string) string {
	return filepath.Join(bundlesDir(root), id, "k", "agent.sock")
}

type instance struct {
	p      *prepared
	id     string
	bundle string
	cgroup string // cgroups path, relative to each hierarchy

	// Set by start, under life; read by Close, which takes life too.
	life    sync.Mutex
	mounted bool
	created bool
	pidfd   *os.File // the container's init (the agent)
	ln      *net.UnixListener
	conn    net.Conn
	log     *os.File

	mu     sync.Mutex // one request at a time
	broken error      // why the instance can serve no more requests
	closed atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// Start implements sandbox.Prepared: it creates and starts a container and
// returns once its agent is ready. It records PhaseRootfs, PhaseBundle,
// phase.Instantiate (the runtime's run --detach) and PhaseReady.
func (p *prepared) Start(ctx context.Context, rec *phase.Recorder) (sandbox.Instance, error) {
	if p.closed.Load() {
		return nil, fmt.Errorf("oci: function %q: prepared function closed: %w", p.spec.Name, errdefs.ErrFailedPrecondition)
	}
	id := newID()
	i := &instance{p: p, id: id, bundle: filepath.Join(bundlesDir(p.d.root), id), cgroup: p.d.cgParent + "/" + id}
	if !p.d.track(i) {
		return nil, fmt.Errorf("oci: driver closed: %w", errdefs.ErrUnavailable)
	}
	i.life.Lock()
	err := i.start(ctx, rec)
	i.life.Unlock()
	if err != nil {
		_ = i.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("oci: start %s (%s): %w", p.spec.Name, p.d.rt.name, err)
	}
	return i, nil
}

func (i *instance) start(ctx context.Context, rec *phase.Recorder) error {
	d := i.p.d
	t := time.Now()
	agentHost := i.path("k")
	if err := os.MkdirAll(agentHost, 0o755); err != nil {
		return err
	}
	if err := mountRootfs(i.bundle, i.p.lowers); err != nil {
		return err
	}
	i.mounted = true
	t = rec.Since(PhaseRootfs, t, "")

	if err := os.Link(d.agent, filepath.Join(agentHost, "agent")); err != nil {
		if err := copyFile(d.agent, filepath.Join(agentHost, "agent"), 0o755); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
	}
	sock := filepath.Join(agentHost, "agent.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return err
	}
	i.ln = ln
	if err := os.Chmod(sock, 0o777); err != nil { // functions may run as any user
		return err
	}
	config, err := instanceSpec(i.p.tmpl, agentHost, i.cgroup)
	if err != nil {
		return err
	}
	if err := os.WriteFile(i.path("config.json"), config, 0o600); err != nil {
		return err
	}
	if i.log, err = os.OpenFile(i.path("log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return err
	}
	t = rec.Since(PhaseBundle, t, "")

	i.created = true // even a failed run may leave state behind
	pid, err := d.rt.run(ctx, i.id, i.bundle, i.log)
	if err != nil {
		return err
	}
	t = rec.Since(phase.Instantiate, t, d.rt.name)
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("the container exited at once: %s", tail(i.log.Name()))
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	i.pidfd = os.NewFile(uintptr(fd), "pidfd")
	if i.conn, err = i.awaitAgent(ctx); err != nil {
		return err
	}
	rec.Since(PhaseReady, t, "")
	return nil
}

func (i *instance) path(name string) string { return filepath.Join(i.bundle, name) }

// awaitAgent accepts the agent's connection and reads its readiness byte.
// It blocks until then, or until the container exits or ctx ends.
func (i *instance) awaitAgent(ctx context.Context) (net.Conn, error) {
	type accepted struct {
		conn net.Conn
		err  error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := i.ln.Accept()
		acc <- accepted{c, err}
	}()
	exited := make(chan struct{})
	go func() {
		if waitExit(i.pidfd) == nil {
			close(exited)
		}
	}()
	defer i.pidfd.SetReadDeadline(time.Now()) // stops waitExit
	var a accepted
	select {
	case a = <-acc:
	case <-exited:
		a.err = fmt.Errorf("the container exited before its agent connected: %s", tail(i.log.Name()))
	case <-ctx.Done():
		a.err = ctx.Err()
	}
	if a.err != nil {
		i.ln.Close()
		if late := <-acc; late.conn != nil {
			late.conn.Close()
		}
		return nil, a.err
	}
	i.ln.Close() // one agent per instance
	stop := context.AfterFunc(ctx, func() { a.conn.SetReadDeadline(time.Now()) })
	err := agent.WaitReady(a.conn)
	if !stop() || err != nil {
		a.conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s", err, tail(i.log.Name()))
	}
	return a.conn, nil
}

// waitExit blocks until the process of the pidfd f exits (its pidfd turns
// readable), without holding a thread: the wait is in Go's poller.
func waitExit(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	waited := false
	return rc.Read(func(uintptr) bool {
		done := waited
		waited = true
		return done
	})
}

// kill kills the container's init, and with it every process in its pid
// namespace.
func (i *instance) kill() {
	if i.pidfd == nil {
		return
	}
	if rc, err := i.pidfd.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _ = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0) })
	}
}

// Invoke implements sandbox.Instance: one request through the agent. It
// records phase.Run.
func (i *instance) Invoke(ctx context.Context, req *sandbox.Request) (sandbox.Result, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	begin := time.Now()
	if i.closed.Load() {
		return sandbox.Result{}, fmt.Errorf("oci: instance %s is closed: %w", i.id, errdefs.ErrFailedPrecondition)
	}
	if i.broken != nil {
		return sandbox.Result{}, fmt.Errorf("oci: instance %s can serve no more requests (%v): %w", i.id, i.broken, errdefs.ErrFailedPrecondition)
	}
	areq := &agent.Request{Env: req.Env}
	if req.Stdin != nil {
		body, err := io.ReadAll(req.Stdin)
		if err != nil {
			return sandbox.Result{}, fmt.Errorf("oci: read request body: %w", err)
		}
		areq.Stdin = body
	}
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return sandbox.Result{}, timeoutError("deadline exceeded before the function started")
		}
		areq.TimeoutMs = int((left + time.Millisecond - 1) / time.Millisecond)
	}
	if err := ctx.Err(); err != nil {
		return sandbox.Result{}, fmt.Errorf("invocation canceled: %w", err)
	}
	cg := i.p.d.cg
	ooms, _ := cg.oomKills(i.cgroup)

	// The agent stops the function at the deadline itself; it gets
	// killGrace to say so before the connection is cut. Cancellation cuts
	// it at once.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		grace := time.Duration(0)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			grace = killGrace
		}
		i.conn.SetDeadline(time.Now().Add(grace))
	})
	resp, err := agent.Call(i.conn, areq)
	if !stop() {
		<-fired
		i.conn.SetDeadline(time.Time{})
	}
	end := time.Now()
	req.Phases.Add(phase.Run, end.Sub(begin), "")
	res := sandbox.Result{Duration: end.Sub(begin), ExitCode: -1}
	if err != nil {
		// The conversation is out of step or the agent is gone: this
		// instance is done.
		i.broken = err
		i.kill()
		return res, i.failure(ctx, err, ooms)
	}
	res.ExitCode = resp.ExitCode
	res.MemoryBytes = cg.memoryUsage(i.cgroup)
	if req.Stdout != nil {
		if _, err := req.Stdout.Write(resp.Stdout); err != nil {
			return res, fmt.Errorf("oci: write response: %w", err)
		}
	}
	if req.Stderr != nil {
		if _, err := req.Stderr.Write(resp.Stderr); err != nil {
			return res, fmt.Errorf("oci: write function logs: %w", err)
		}
	}
	return res, i.outcome(ctx, resp, ooms)
}

// outcome classifies a response of the agent.
func (i *instance) outcome(ctx context.Context, resp *agent.Response, ooms int64) error {
	switch {
	case resp.Error != "":
		return &errdefs.FunctionError{Kind: errdefs.KindCrash, ExitCode: -1, Message: "the agent could not start the function: " + resp.Error}
	case resp.TimedOut:
		return timeoutError("deadline exceeded; function killed")
	case resp.ExitCode == 0 && resp.Signal == "":
		return nil
	case i.oomKilled(ooms):
		return &errdefs.FunctionError{Kind: errdefs.KindOOM, ExitCode: resp.ExitCode,
			Message: fmt.Sprintf("memory limit of %d MiB exceeded: killed by the kernel's OOM killer", i.p.spec.MemoryMB)}
	case resp.Signal != "" && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return timeoutError("deadline exceeded; function killed")
	case resp.Signal != "":
		return &errdefs.FunctionError{Kind: errdefs.KindTrap, ExitCode: -1, Message: "killed by signal: " + resp.Signal}
	}
	return &errdefs.FunctionError{Kind: errdefs.KindExit, ExitCode: resp.ExitCode}
}

// failure classifies a broken conversation with the agent.
func (i *instance) failure(ctx context.Context, err error, ooms int64) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return timeoutError("deadline exceeded; the agent did not stop the function, container killed")
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("invocation canceled: %w", context.Canceled)
	case i.oomKilled(ooms):
		return &errdefs.FunctionError{Kind: errdefs.KindOOM, ExitCode: -1, Err: err,
			Message: fmt.Sprintf("memory limit of %d MiB exceeded: the OOM killer killed the agent", i.p.spec.MemoryMB)}
	}
	msg := "the container died: " + err.Error()
	if t := tail(i.log.Name()); t != "" {
		msg += ": " + t
	}
	return &errdefs.FunctionError{Kind: errdefs.KindCrash, ExitCode: -1, Message: msg, Err: err}
}

// oomKilled tells whether the OOM killer has killed in the instance's
// cgroup since it counted before kills.
func (i *instance) oomKilled(before int64) bool {
	n, err := i.p.d.cg.oomKills(i.cgroup)
	return err == nil && n > before
}

func timeoutError(msg string) error {
	return &errdefs.FunctionError{Kind: errdefs.KindTimeout, Message: msg, Err: context.DeadlineExceeded}
}

// Close implements sandbox.Instance: it deletes the container (its
// processes and cgroup), unmounts its root file system and removes its
// bundle. A request in flight fails.
func (i *instance) Close(ctx context.Context) error {
	i.closeOnce.Do(func() {
		i.closed.Store(true)
		i.life.Lock() // waits for a Start in progress (a Driver.Close)
		defer i.life.Unlock()
		i.closeErr = i.destroy(ctx)
		i.p.d.untrack(i)
	})
	return i.closeErr
}

func (i *instance) destroy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var errs []error
	if i.conn != nil {
		i.conn.Close() // fails a request in flight; the agent exits
	}
	if i.ln != nil {
		i.ln.Close()
	}
	if i.created {
		errs = append(errs, i.p.d.rt.delete(ctx, i.id))
	}
	if i.pidfd != nil {
		i.pidfd.Close()
	}
	if i.log != nil {
		i.log.Close()
	}
	if i.mounted {
		errs = append(errs, unmount(i.path("rootfs")))
	}
	errs = append(errs, os.RemoveAll(i.bundle))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("oci: close instance %s: %w", i.id, err)
	}
	return nil
}
