package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	v1 "github.com/containerd/cgroups/stats/v1"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	kerrdefs "github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
)

// service is the shim v2 task service of one shim process: every task of
// one pod (or the one task of a container started outside Kubernetes).
// Each RPC returns errors in containerd's vocabulary, translated to ttrpc
// status codes at the edge (wire).
type service struct {
	ctx      context.Context // the shim's lifetime; carries the namespace
	events   *eventQueue
	engine   *engine
	images   imageStore // for images whose module is a wasm layer; may be nil
	shutdown func()     // ends the shim process
	pid      uint32     // every process of every task runs inside the shim

	mu       sync.Mutex
	tasks    map[string]*task
	stopping bool // Shutdown found no task left; the shim is exiting
}

var _ taskAPI.TaskService = (*service)(nil)

// newService starts a task service publishing to pub. The wasm engine
// starts warming up at once, with compiled modules cached in cacheDir
// ("" for memory only). images (optional) reads modules that images hold
// as wasm layers rather than as files.
func newService(ctx context.Context, pub events.Publisher, cacheDir string, images imageStore, shutdown func()) *service {
	return &service{
		ctx:      ctx,
		events:   newEventQueue(ctx, pub),
		engine:   startEngine(ctx, cacheDir),
		images:   images,
		shutdown: shutdown,
		pid:      uint32(os.Getpid()),
		tasks:    map[string]*task{},
	}
}

// close flushes the events and stops the engine; the shim is exiting.
func (s *service) close(ctx context.Context) {
	s.events.close(5 * time.Second)
	s.engine.close(ctx)
	if c, ok := s.images.(interface{ close() }); ok {
		c.close()
	}
}

// wire translates an error to a ttrpc status for containerd.
func wire(err error) error {
	if err == nil {
		return nil
	}
	return errdefs.ToGRPC(err)
}

// classed gives an error from kindling's vocabulary containerd's class,
// keeping its message.
type classed struct{ err, class error }

func (c classed) Error() string   { return c.err.Error() }
func (c classed) Unwrap() []error { return []error{c.err, c.class} }

func fromKindling(err error) error {
	switch {
	case errors.Is(err, kerrdefs.ErrInvalidArgument):
		return classed{err, errdefs.ErrInvalidArgument}
	case errors.Is(err, kerrdefs.ErrNotFound):
		return classed{err, errdefs.ErrNotFound}
	case errors.Is(err, kerrdefs.ErrFailedPrecondition):
		return classed{err, errdefs.ErrFailedPrecondition}
	case errors.Is(err, kerrdefs.ErrNotImplemented):
		return classed{err, errdefs.ErrNotImplemented}
	}
	return err
}

func (s *service) task(id string) (*task, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[id]
	if !ok {
		return nil, fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
	}
	return t, nil
}

func (s *service) process(id, execID string) (*task, *process, error) {
	t, err := s.task(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := t.process(execID)
	if err != nil {
		return nil, nil, err
	}
	return t, p, nil
}

// Create implements taskAPI.TaskService: it mounts the rootfs, finds and
// compiles the entrypoint module (so a bad module fails here, not at
// Start) and opens the process's streams.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	t, err := s.create(ctx, r)
	if err != nil {
		return nil, wire(fmt.Errorf("create task %s: %w", r.ID, err))
	}
	s.events.publish(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint:  r.Checkpoint,
		Pid:         s.pid,
	})
	log.G(ctx).WithField("id", t.id).WithField("sandbox", t.sandbox).Debug("task created")
	return &taskAPI.CreateTaskResponse{Pid: s.pid}, nil
}

func (s *service) create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *task, err error) {
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, fmt.Errorf("restoring from a checkpoint is not supported: %w", errdefs.ErrNotImplemented)
	}
	if _, err := s.task(r.ID); err == nil {
		return nil, errdefs.ErrAlreadyExists
	}
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, err
	}
	t := &task{id: r.ID, bundle: r.Bundle, spec: spec, sandbox: isSandbox(spec)}
	if spec.Linux != nil {
		t.memoryMB = memoryMB(spec.Linux.Resources)
	} else {
		t.memoryMB = DefaultMemoryMB
	}
	var run runner = pauseRunner{}
	if !t.sandbox {
		// The sandbox container runs nothing, so its rootfs (the pause
		// image) is never mounted.
		if t.rootfs, t.mounted, err = mountRootfs(r.Bundle, spec, r.Rootfs); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				_ = t.unmountRootfs()
			}
		}()
		if run, err = s.prepare(ctx, t, spec.Process); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				run.close(ctx)
			}
		}()
	}
	paths := stdioPaths{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}
	io, err := openStdio(ctx, paths)
	if err != nil {
		return nil, err
	}
	t.init = newProcess("", paths, io, run)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		// The pod's last task was deleted and the shim is exiting; the
		// kubelet retries, and the next start finds no shim and makes one.
		io.close()
		return nil, fmt.Errorf("the shim is shutting down: %w", errdefs.ErrUnavailable)
	}
	if _, ok := s.tasks[r.ID]; ok {
		io.close()
		return nil, errdefs.ErrAlreadyExists
	}
	s.tasks[r.ID] = t
	return t, nil
}

// prepare finds the process's module and compiles it (from the node's
// cache when another pod compiled it before). The module is args[0] in
// the task's rootfs or, when the rootfs has no such file (or the spec no
// args), the wasm layer of the container's image.
func (s *service) prepare(ctx context.Context, t *task, proc *specs.Process) (runner, error) {
	ro := t.spec.Root != nil && t.spec.Root.Readonly
	prog, err := resolveProgram(t.rootfs, ro, proc, t.spec.Mounts, t.memory())
	noArgs := proc == nil || len(proc.Args) == 0
	if err != nil && s.images != nil && (errors.Is(err, errdefs.ErrNotFound) || noArgs) {
		image, module, ierr := s.images.wasmModule(ctx, t.id)
		switch {
		case ierr == nil:
			if proc == nil {
				proc = &specs.Process{}
			}
			prog, err = newProgram(image, module, t.rootfs, ro, proc, t.spec.Mounts, t.memory()), nil
		case !errors.Is(ierr, errdefs.ErrNotFound):
			err = ierr // the image has a wasm layer, but it cannot be read
		}
	}
	if err != nil {
		return nil, err
	}
	drv, err := s.engine.driver(ctx)
	if err != nil {
		return nil, err
	}
	rec := phase.NewRecorder()
	p, err := drv.Prepare(ctx, prog.spec, rec)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", prog.path, fromKindling(err))
	}
	log.G(ctx).WithField("id", t.id).WithField("module", prog.path).WithField("phases", rec.Timings()).Debug("module prepared")
	return &wasmRunner{prepared: p}, nil
}

// Start implements taskAPI.TaskService.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	t, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	started := func() {
		if r.ExecID == "" {
			s.events.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: t.id, Pid: s.pid})
		} else {
			s.events.publish(runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: t.id, ExecID: r.ExecID, Pid: s.pid})
		}
	}
	if err := p.start(s.ctx, started, func(res result) { s.exited(t, p, res) }); err != nil {
		return nil, wire(fmt.Errorf("start %s: %w", describe(r.ID, r.ExecID), err))
	}
	return &taskAPI.StartResponse{Pid: s.pid}, nil
}

// exited publishes a process's exit. When a task's init process ends, its
// execs end with it, as in a PID namespace.
func (s *service) exited(t *task, p *process, res result) {
	if res.oom {
		s.events.publish(runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: t.id})
	}
	_, status, at := p.snapshot()
	id := p.id
	if id == "" {
		id = t.id
	}
	s.events.publish(runtime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: t.id,
		ID:          id,
		Pid:         s.pid,
		ExitStatus:  status,
		ExitedAt:    protobuf.ToTimestamp(at),
	})
	if p == t.init {
		for _, e := range t.processes()[1:] {
			_ = e.kill(syscall.SIGKILL, func(res result) { s.exited(t, e, res) })
		}
	}
}

func describe(id, execID string) string {
	if execID == "" {
		return "task " + id
	}
	return fmt.Sprintf("exec %s of task %s", execID, id)
}

// Delete implements taskAPI.TaskService. Deleting the init process
// deletes the task: its streams are closed and its rootfs unmounted.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	t, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	st, status, at := p.snapshot()
	if st == tasktypes.Status_RUNNING {
		return nil, wire(fmt.Errorf("delete %s: it is running; kill it first: %w", describe(r.ID, r.ExecID), errdefs.ErrFailedPrecondition))
	}
	if at.IsZero() {
		at = time.Now() // never started
	}
	resp := &taskAPI.DeleteResponse{Pid: s.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}
	if r.ExecID != "" {
		t.removeExec(r.ExecID)
		p.io.close()
		p.runner.close(ctx)
		return resp, nil
	}
	if t.running() > 0 {
		return nil, wire(fmt.Errorf("delete task %s: execs still running: %w", r.ID, errdefs.ErrFailedPrecondition))
	}
	s.mu.Lock()
	delete(s.tasks, r.ID)
	s.mu.Unlock()
	if err := t.release(ctx); err != nil {
		return nil, wire(err)
	}
	s.events.publish(runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
		ContainerID: t.id,
		Pid:         s.pid,
		ExitStatus:  status,
		ExitedAt:    resp.ExitedAt,
	})
	return resp, nil
}

// Exec implements taskAPI.TaskService: an exec runs another module of the
// container's rootfs (args[0] of the exec's process), with the
// container's preopens and memory limit.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	if err := s.exec(ctx, r); err != nil {
		return nil, wire(fmt.Errorf("exec %s in task %s: %w", r.ExecID, r.ID, err))
	}
	s.events.publish(runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return &emptypb.Empty{}, nil
}

func (s *service) exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (err error) {
	t, err := s.task(r.ID)
	if err != nil {
		return err
	}
	if r.ExecID == "" {
		return fmt.Errorf("empty exec ID: %w", errdefs.ErrInvalidArgument)
	}
	if t.sandbox {
		return fmt.Errorf("the pod sandbox container runs nothing to exec into; exec into one of the pod's containers: %w", errdefs.ErrFailedPrecondition)
	}
	if st, _, _ := t.init.snapshot(); st == tasktypes.Status_STOPPED {
		return fmt.Errorf("the container has stopped: %w", errdefs.ErrFailedPrecondition)
	}
	if _, err := t.process(r.ExecID); err == nil {
		return errdefs.ErrAlreadyExists
	}
	if r.Spec == nil {
		return fmt.Errorf("no process spec: %w", errdefs.ErrInvalidArgument)
	}
	var proc specs.Process
	if err := json.Unmarshal(r.Spec.Value, &proc); err != nil {
		return fmt.Errorf("decode process spec: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	run, err := s.prepare(ctx, t, &proc)
	if err != nil {
		return err
	}
	paths := stdioPaths{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}
	io, err := openStdio(ctx, paths)
	if err != nil {
		run.close(ctx)
		return err
	}
	if err := t.addExec(newProcess(r.ExecID, paths, io, run)); err != nil {
		io.close()
		run.close(ctx)
		return err
	}
	return nil
}

// State implements taskAPI.TaskService.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	t, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	st, status, at := p.snapshot()
	id := r.ExecID
	if id == "" {
		id = t.id
	}
	resp := &taskAPI.StateResponse{
		ID:         id,
		Bundle:     t.bundle,
		Pid:        s.pid,
		Status:     st,
		Stdin:      p.paths.stdin,
		Stdout:     p.paths.stdout,
		Stderr:     p.paths.stderr,
		Terminal:   p.paths.terminal,
		ExitStatus: status,
		ExecID:     r.ExecID,
	}
	if !at.IsZero() {
		resp.ExitedAt = protobuf.ToTimestamp(at)
	}
	return resp, nil
}

// Wait implements taskAPI.TaskService.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	status, at, err := p.wait(ctx)
	if err != nil {
		return nil, wire(err)
	}
	return &taskAPI.WaitResponse{ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Kill implements taskAPI.TaskService. With All, every process of the
// task gets the signal.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	t, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	sig := syscall.Signal(r.Signal)
	if r.All && r.ExecID == "" {
		for _, e := range t.processes()[1:] {
			_ = e.kill(sig, func(res result) { s.exited(t, e, res) })
		}
	}
	if err := p.kill(sig, func(res result) { s.exited(t, p, res) }); err != nil {
		return nil, wire(fmt.Errorf("kill %s: %w", describe(r.ID, r.ExecID), err))
	}
	return &emptypb.Empty{}, nil
}

// Pids implements taskAPI.TaskService: one entry per running process, all
// with the shim's PID, where the guests run.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	t, err := s.task(r.ID)
	if err != nil {
		return nil, wire(err)
	}
	resp := &taskAPI.PidsResponse{}
	for i := t.running(); i > 0; i-- {
		resp.Processes = append(resp.Processes, &tasktypes.ProcessInfo{Pid: s.pid})
	}
	return resp, nil
}

// Stats implements taskAPI.TaskService with cgroup v1 metrics, the type
// containerd's CRI plugin decodes: running processes, the memory limit,
// and the largest linear memory a finished run of the task used.
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	t, err := s.task(r.ID)
	if err != nil {
		return nil, wire(err)
	}
	var used uint64
	for _, p := range t.processes() {
		used = max(used, p.runner.memoryBytes())
	}
	limit := uint64(t.memory()) << 20
	m := &v1.Metrics{
		Pids:   &v1.PidsStat{Current: uint64(t.running())},
		Memory: &v1.MemoryStat{Usage: &v1.MemoryEntry{Usage: used, Max: used, Limit: limit}},
	}
	a, err := protobuf.MarshalAnyToProto(m)
	if err != nil {
		return nil, wire(fmt.Errorf("encode stats of task %s: %w", r.ID, err))
	}
	return &taskAPI.StatsResponse{Stats: a}, nil
}

// Update implements taskAPI.TaskService: a new memory limit applies to
// processes created after it (a running guest's limit is fixed when it
// starts).
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	t, err := s.task(r.ID)
	if err != nil {
		return nil, wire(err)
	}
	if r.Resources != nil && len(r.Resources.Value) > 0 {
		var res specs.LinuxResources
		if err := json.Unmarshal(r.Resources.Value, &res); err != nil {
			return nil, wire(fmt.Errorf("update task %s: decode resources: %v: %w", r.ID, err, errdefs.ErrInvalidArgument))
		}
		if res.Memory != nil && res.Memory.Limit != nil {
			t.setMemory(memoryMB(&res))
		}
	}
	return &emptypb.Empty{}, nil
}

// CloseIO implements taskAPI.TaskService: the process's stdin ends once
// what the client wrote has been read.
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, wire(err)
	}
	if r.Stdin {
		p.io.closeStdin()
	}
	return &emptypb.Empty{}, nil
}

// ResizePty implements taskAPI.TaskService. There is no pseudo-terminal: a
// WASI guest has no window size, so a resize is accepted and ignored.
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	if _, _, err := s.process(r.ID, r.ExecID); err != nil {
		return nil, wire(err)
	}
	return &emptypb.Empty{}, nil
}

// Pause implements taskAPI.TaskService: not supported.
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return nil, wire(fmt.Errorf("pause task %s: not supported: a wasm guest runs inside the shim process, where no cgroup freezer can stop it: %w", r.ID, errdefs.ErrNotImplemented))
}

// Resume implements taskAPI.TaskService: not supported, as Pause.
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return nil, wire(fmt.Errorf("resume task %s: not supported: tasks cannot be paused: %w", r.ID, errdefs.ErrNotImplemented))
}

// Checkpoint implements taskAPI.TaskService: not supported.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, wire(fmt.Errorf("checkpoint task %s: not supported: a running wasm guest's state cannot be saved: %w", r.ID, errdefs.ErrNotImplemented))
}

// Connect implements taskAPI.TaskService.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	if _, err := s.task(r.ID); err != nil {
		return nil, wire(err)
	}
	return &taskAPI.ConnectResponse{ShimPid: s.pid, TaskPid: s.pid}, nil
}

// Shutdown implements taskAPI.TaskService. containerd asks after deleting
// each task; the shim exits when the last task of its pod is gone.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	n := len(s.tasks)
	s.stopping = n == 0
	s.mu.Unlock()
	if n > 0 {
		return &emptypb.Empty{}, nil
	}
	s.shutdown()
	return &emptypb.Empty{}, nil
}
