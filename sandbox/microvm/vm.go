package microvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kindling-dev/kindling/agent"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
)

// Phases of the microvm sandbox, beyond the shared names of package phase
// (instantiate: QEMU starts and its monitor answers; restore: the device
// state loads; snapshot: a template is saved; run: the invocation).
const (
	// PhaseBoot is the guest kernel's boot, until its init (the agent) runs.
	PhaseBoot = phase.Boot
	// PhaseAgentReady lasts until the agent announces readiness on its port.
	PhaseAgentReady = phase.AgentReady
	// PhasePrefetch is the time spent on prefetching a page set: issuing it
	// (loading set) or waiting for what QEMU's start-up did not overlap
	// (working set).
	PhasePrefetch = phase.Prefetch
)

// graceAfterDeadline is how long the daemon waits, past an invocation's
// deadline, for the agent to report that it killed the function, before
// it gives the guest up and destroys the VM.
const graceAfterDeadline = 2 * time.Second

// oomWait bounds the wait for the guest kernel's OOM report after the
// agent says the function was SIGKILLed: the console and the agent's port
// are separate streams, so the report may arrive a moment after.
const oomWait = 250 * time.Millisecond

// vm is one running QEMU.
type vm struct {
	id       string
	dir      string
	log      *slog.Logger
	mach     *machine
	memPath  string // the guest RAM file: its own (booted) or a snapshot's
	booted   bool   // RAM is its own shared file: it can be snapshotted
	snapshot string // the snapshot it was restored from
	function string
	memoryMB int
	created  time.Time
	phases   []phase.Timing

	mu          sync.Mutex // one call (or snapshot) at a time
	waitOff     int64      // console offset after the agent's latest "waiting" line
	invocations int
	dead        error // why the VM can no longer serve
	record      *recording

	recordPending atomic.Bool // record set and not yet stored
}

// recording is what a restored VM records during its first invocation.
type recording struct {
	snap    *snapshot
	loading *loadingSetRecorder // nil unless the loading set is recorded
	working bool
}

// newVMDir reserves id (and its directory) for a VM being started.
func (m *Manager) newVMDir(id string) (string, error) {
	if err := checkID("vm", id); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", fmt.Errorf("microvm: manager is closed: %w", errdefs.ErrFailedPrecondition)
	}
	if _, ok := m.vms[id]; ok {
		return "", fmt.Errorf("microvm: vm %s: %w", id, errdefs.ErrAlreadyExists)
	}
	dir := filepath.Join(m.cfg.Root, dirVMs, id)
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("microvm: vm %s: %w", id, errdefs.ErrAlreadyExists)
		}
		return "", fmt.Errorf("microvm: %w", err)
	}
	m.vms[id] = nil // reserved
	return dir, nil
}

// register publishes a started VM (or releases the reservation when v is
// nil). A manager closed meanwhile destroys it.
func (m *Manager) register(id string, v *vm) error {
	m.mu.Lock()
	closed := m.closed
	if v == nil || closed {
		delete(m.vms, id)
	} else {
		m.vms[id] = v
	}
	m.mu.Unlock()
	if v == nil {
		return os.RemoveAll(filepath.Join(m.cfg.Root, dirVMs, id))
	}
	if closed {
		v.destroy()
		return fmt.Errorf("microvm: manager closed while vm %s started: %w", id, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// bootVM boots a fresh VM from the kernel and initrd, its RAM in a file
// of its own mapped shared, so it can become a snapshot.
func (m *Manager) bootVM(ctx context.Context, id, initrd, function string, memoryMB int, rec *phase.Recorder) (_ *vm, err error) {
	dir, err := m.newVMDir(id)
	if err != nil {
		return nil, err
	}
	var v *vm
	defer func() {
		if err != nil {
			if v != nil {
				v.destroy()
			}
			m.register(id, nil)
			return
		}
		err = m.register(id, v)
	}()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.BootTimeout)
	defer cancel()
	start := time.Now()
	l := &launch{
		machineConfig: m.machineConfig(memoryMB, initrd),
		Name:          vmName(dir),
		MemPath:       filepath.Join(dir, "mem"),
		Shared:        true,
	}
	mach, err := startMachine(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("microvm: boot vm %s: %w", id, err)
	}
	v = &vm{id: id, dir: dir, log: m.log, mach: mach, memPath: l.MemPath, booted: true, function: function, memoryMB: memoryMB, created: start}
	if err := writePidfile(dir, mach.pid()); err != nil {
		return nil, fmt.Errorf("microvm: boot vm %s: %w", id, err)
	}
	local := phase.NewRecorder()
	t := local.Since(phase.Instantiate, start, string(m.guest.accel.Accel))
	if _, err := mach.console.waitFor(ctx, 0, lineInit, mach.exited); err != nil {
		return nil, fmt.Errorf("microvm: boot vm %s: waiting for the guest's init: %w", id, mach.exitError(err))
	}
	t = local.Since(PhaseBoot, t, "")
	if err := mach.waitReady(ctx); err != nil {
		return nil, fmt.Errorf("microvm: boot vm %s: %w", id, err)
	}
	local.Since(PhaseAgentReady, t, "")
	if v.waitOff, err = mach.console.waitFor(ctx, 0, lineWaiting, mach.exited); err != nil {
		return nil, fmt.Errorf("microvm: boot vm %s: %w", id, mach.exitError(err))
	}
	v.phases = local.Timings()
	addAll(rec, v.phases)
	return v, nil
}

// restoreOptions say how a clone is restored.
type restoreOptions struct {
	prefetch      Prefetch
	recordLoading bool
	recordWorking bool
}

// restoreVM starts a clone of snapshot s: a new QEMU mapping the
// snapshot's memory file privately, restoring its device state, resumed.
func (m *Manager) restoreVM(ctx context.Context, id string, s *snapshot, opts restoreOptions, rec *phase.Recorder) (_ *vm, err error) {
	if s.meta.Accel != m.guest.accel.Accel {
		return nil, fmt.Errorf("microvm: snapshot %s was taken under %s, VMs here run under %s: %w", s.meta.ID, s.meta.Accel, m.guest.accel.Accel, errdefs.ErrFailedPrecondition)
	}
	state, mem, err := s.open()
	if err != nil {
		return nil, err
	}
	defer state.Close()
	defer mem.Close()
	dir, err := m.newVMDir(id)
	if err != nil {
		return nil, err
	}
	var v *vm
	var loading *loadingSetRecorder
	defer func() {
		if err != nil {
			if loading != nil {
				loading.close()
			}
			if v != nil {
				v.destroy()
			}
			m.register(id, nil)
			return
		}
		err = m.register(id, v)
	}()
	local := phase.NewRecorder()
	start := time.Now()

	// Prefetch first, so the reads overlap QEMU's start-up.
	var fetched chan error
	switch opts.prefetch {
	case PrefetchNone, "":
	case PrefetchLoadingSet:
		set, err := s.pageSet(setLoading)
		if err != nil {
			return nil, err
		}
		if err := prefetchAsync(mem, set); err != nil {
			return nil, fmt.Errorf("microvm: restore vm %s: %w", id, err)
		}
		start = local.Since(PhasePrefetch, start, fmt.Sprintf("loading-set pages=%d", set.Pages()))
	case PrefetchWorkingSet:
		set, err := s.pageSet(setWorking)
		if err != nil {
			return nil, err
		}
		fetched = make(chan error, 1)
		go func() { fetched <- prefetchSync(mem, set, 4) }()
	default:
		return nil, fmt.Errorf("microvm: prefetch mode %q: %w", opts.prefetch, errdefs.ErrInvalidArgument)
	}
	if opts.recordLoading {
		if loading, err = newLoadingSetRecorder(mem, s.memSize()); err != nil {
			return nil, fmt.Errorf("microvm: restore vm %s: %w", id, err)
		}
	}

	l := &launch{
		machineConfig: m.machineConfig(s.meta.MemoryMB, ""),
		Name:          vmName(dir),
		MemPath:       s.memPath(),
		State:         state,
	}
	mach, err := startMachine(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("microvm: restore vm %s from snapshot %s: %w", id, s.meta.ID, err)
	}
	v = &vm{id: id, dir: dir, log: m.log, mach: mach, memPath: l.MemPath, snapshot: s.meta.ID, function: s.meta.Function, memoryMB: s.meta.MemoryMB, created: start}
	if err := writePidfile(dir, mach.pid()); err != nil {
		return nil, fmt.Errorf("microvm: restore vm %s: %w", id, err)
	}
	t := local.Since(phase.Instantiate, start, string(m.guest.accel.Accel))
	if err := mach.restore(ctx); err != nil {
		return nil, fmt.Errorf("microvm: restore vm %s from snapshot %s: %w", id, s.meta.ID, err)
	}
	t = local.Since(phase.Restore, t, "")
	if fetched != nil {
		if err := <-fetched; err != nil {
			return nil, fmt.Errorf("microvm: restore vm %s: %w", id, err)
		}
		set, _ := s.pageSet(setWorking)
		t = local.Since(PhasePrefetch, t, fmt.Sprintf("working-set pages=%d", set.Pages()))
	}
	if err := mach.qmp.Cont(ctx); err != nil {
		return nil, fmt.Errorf("microvm: restore vm %s: resume: %w", id, mach.exitError(err))
	}
	if err := mach.waitReady(ctx); err != nil {
		return nil, fmt.Errorf("microvm: restore vm %s from snapshot %s: %w", id, s.meta.ID, err)
	}
	local.Since(PhaseAgentReady, t, "")
	if opts.recordLoading || opts.recordWorking {
		v.record = &recording{snap: s, loading: loading, working: opts.recordWorking}
		v.recordPending.Store(true)
		loading = nil
	}
	v.phases = local.Timings()
	addAll(rec, v.phases)
	return v, nil
}

func (m *Manager) machineConfig(memoryMB int, initrd string) machineConfig {
	return machineConfig{
		QEMU:     m.guest.qemu,
		Accel:    m.guest.accel.Accel,
		Kernel:   m.guest.kernel,
		Initrd:   initrd,
		Cmdline:  m.guest.cmdline,
		MemoryMB: memoryMB,
	}
}

func addAll(rec *phase.Recorder, ts []phase.Timing) {
	for _, t := range ts {
		rec.Add(t.Name, t.Duration, t.Detail)
	}
}

// call sends one request to the agent and waits for its response. The
// caller holds v.mu. A deadline on ctx is the function's timeout: the agent
// enforces it and reports; a guest that stays silent past it (a hung or
// crashed kernel) is destroyed.
func (v *vm) call(ctx context.Context, req *agent.Request) (*agent.Response, error) {
	if v.dead != nil {
		return nil, v.dead
	}
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMs = max(1, int(time.Until(dl)/time.Millisecond))
	}
	type result struct {
		resp *agent.Response
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		resp, err := agent.Call(v.mach.agent, req)
		ch <- result{resp, err}
	}()
	done := ctx.Done()
	var grace <-chan time.Time
	for {
		select {
		case r := <-ch:
			if r.err != nil {
				return nil, v.crashed(r.err)
			}
			v.invocations++
			return r.resp, nil
		case <-done:
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				v.kill(fmt.Errorf("invocation canceled: %w", ctx.Err()))
				<-ch
				return nil, v.dead
			}
			done, grace = nil, time.After(graceAfterDeadline)
		case <-grace:
			v.kill(errors.New("the guest did not answer by the deadline; VM destroyed"))
			<-ch
			return nil, &errdefs.FunctionError{Kind: errdefs.KindTimeout, Message: "the guest did not answer by the deadline; VM destroyed", Err: context.DeadlineExceeded}
		}
	}
}

// crashed turns a broken channel into the VM's death: a kernel panic or a
// QEMU that exited.
func (v *vm) crashed(cause error) error {
	select {
	case <-v.mach.exited:
	case <-time.After(time.Second):
		// The port broke but QEMU lives on: nothing more can be said to it.
		v.mach.kill()
	}
	msg := "the VM stopped"
	if _, panicked := v.mach.console.find(0, linePanic); panicked {
		msg = "the guest kernel panicked"
	}
	v.dead = &errdefs.FunctionError{Kind: errdefs.KindCrash, Message: msg, Err: v.mach.exitError(cause)}
	return v.dead
}

func (v *vm) kill(reason error) {
	v.mach.kill()
	if v.dead == nil {
		v.dead = fmt.Errorf("microvm: vm %s: %w", v.id, reason)
	}
}

// outcome turns an agent response into the invocation's error, if any.
// consoleFrom is the console offset when the request was sent.
func (v *vm) outcome(ctx context.Context, resp *agent.Response, consoleFrom int64) error {
	switch {
	case resp.Error != "":
		return fmt.Errorf("microvm: vm %s: the agent could not run the function: %s", v.id, resp.Error)
	case resp.TimedOut:
		return &errdefs.FunctionError{Kind: errdefs.KindTimeout, Message: "deadline exceeded; the function was killed", Err: context.DeadlineExceeded}
	case resp.Signal != "":
		if v.sawOOM(ctx, consoleFrom, resp.Signal == "killed") {
			return &errdefs.FunctionError{Kind: errdefs.KindOOM, Message: fmt.Sprintf("the guest kernel killed the function out of memory (guest memory %d MiB)", v.memoryMB)}
		}
		return &errdefs.FunctionError{Kind: errdefs.KindTrap, Message: "killed by signal: " + resp.Signal + lastLine(resp.Stderr)}
	case resp.ExitCode != 0:
		return &errdefs.FunctionError{Kind: errdefs.KindExit, ExitCode: resp.ExitCode}
	}
	return nil
}

// sawOOM reports whether the guest kernel's OOM killer spoke since
// offset from, waiting a moment for it when the function was SIGKILLed.
func (v *vm) sawOOM(ctx context.Context, from int64, wait bool) bool {
	if _, ok := v.mach.console.find(from, lineOOM); ok || !wait {
		return ok
	}
	ctx, cancel := context.WithTimeout(ctx, oomWait)
	defer cancel()
	_, err := v.mach.console.waitFor(ctx, from, lineOOM, v.mach.exited)
	return err == nil
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if s == "" {
		return ""
	}
	return ": " + s
}

// finishRecording stores what the first invocation after a restore
// touched, and stops recording.
func (v *vm) finishRecording() error {
	r := v.record
	if r == nil {
		return nil
	}
	v.record = nil
	defer v.recordPending.Store(false)
	var errs []error
	if r.loading != nil {
		if err := r.loading.scan(); err != nil {
			errs = append(errs, err)
		} else if err := r.snap.putPageSet(setLoading, r.loading.result()); err != nil {
			errs = append(errs, err)
		}
		r.loading.close()
	}
	if r.working {
		if set, err := workingSet(v.mach.pid(), v.memPath); err != nil {
			errs = append(errs, err)
		} else if err := r.snap.putPageSet(setWorking, set); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// invoke runs one request in the VM, writing the function's output to
// stdout and stderr, and returns the agent's response and the function's
// error, if any. It records phase.Run.
func (v *vm) invoke(ctx context.Context, req *agent.Request, stdout, stderr io.Writer, rec *phase.Recorder) (*agent.Response, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	from := v.mach.console.offset()
	var stopScan func()
	if v.record != nil && v.record.loading != nil {
		stopScan = v.record.loading.scanEvery(10 * time.Millisecond)
	}
	start := time.Now()
	resp, err := v.call(ctx, req)
	rec.Since(phase.Run, start, "")
	if stopScan != nil {
		stopScan()
	}
	if err != nil {
		return nil, err
	}
	if err := v.finishRecording(); err != nil {
		// The invocation itself succeeded; a failed recording is only a
		// missed optimization.
		v.log.Warn("microvm: recording the pages of the first invocation failed", "vm", v.id, "err", err)
	}
	if stdout != nil {
		stdout.Write(resp.Stdout)
	}
	if stderr != nil {
		stderr.Write(resp.Stderr)
	}
	return resp, v.outcome(ctx, resp, from)
}

// destroy kills QEMU and removes the VM's files. The memory file of a
// restored VM belongs to its snapshot and stays.
func (v *vm) destroy() error {
	v.mach.kill() // first: it ends a call in progress
	v.mu.Lock()
	if v.record != nil && v.record.loading != nil {
		v.record.loading.close()
		v.record = nil
	}
	if v.dead == nil {
		v.dead = fmt.Errorf("microvm: vm %s was deleted: %w", v.id, errdefs.ErrNotFound)
	}
	v.mu.Unlock()
	if err := os.RemoveAll(v.dir); err != nil {
		return fmt.Errorf("microvm: remove vm %s: %w", v.id, err)
	}
	return nil
}
