package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/containerd/cgroups/stats/v1"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/fifo"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kindling-dev/kindling/internal/testmodules"
)

// These tests drive the task service in-process, as containerd would,
// with a recording publisher: no containerd and no root needed (the
// rootfs is a plain directory named by the spec's root path).

type recorder struct {
	mu     sync.Mutex
	events []recorded
	added  chan struct{}
}

type recorded struct {
	topic string
	event events.Event
}

func newRecorder() *recorder { return &recorder{added: make(chan struct{}, 1000)} }

func (r *recorder) Publish(ctx context.Context, topic string, event events.Event) error {
	if _, err := namespaces.NamespaceRequired(ctx); err != nil {
		return err
	}
	r.mu.Lock()
	r.events = append(r.events, recorded{topic, event})
	r.mu.Unlock()
	r.added <- struct{}{}
	return nil
}

// topics waits until n events were published and returns their topics.
func (r *recorder) topics(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		if len(r.events) >= n {
			var out []string
			for _, e := range r.events {
				out = append(out, e.topic)
			}
			r.mu.Unlock()
			return out
		}
		r.mu.Unlock()
		select {
		case <-r.added:
		case <-deadline:
			t.Fatalf("fewer than %d events published: %v", n, r.events)
		}
	}
}

type fixture struct {
	svc      *service
	pub      *recorder
	ctx      context.Context
	shutdown chan struct{}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "test")
	pub := newRecorder()
	sd := make(chan struct{})
	var once sync.Once
	svc := newService(ctx, pub, "", fakeImages{}, func() { once.Do(func() { close(sd) }) })
	t.Cleanup(func() { svc.close(ctx) })
	return &fixture{svc: svc, pub: pub, ctx: ctx, shutdown: sd}
}

// bundle writes a bundle whose rootfs holds files and whose spec runs args.
func bundle(t *testing.T, files map[string][]byte, annotations map[string]string, args ...string) string {
	return bundleWithLimit(t, 0, files, annotations, args...)
}

// bundleWithLimit is bundle with a memory limit in bytes (0 for none).
func bundleWithLimit(t *testing.T, limit int64, files map[string][]byte, annotations map[string]string, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "root")
	for name, data := range files {
		p := filepath.Join(rootfs, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := specs.Spec{
		Version:     specs.Version,
		Root:        &specs.Root{Path: rootfs},
		Process:     &specs.Process{Args: args, Cwd: "/", Env: []string{"PATH=/bin"}},
		Annotations: annotations,
		Linux:       &specs.Linux{},
	}
	if limit > 0 {
		spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// outputs are a process's stdout and stderr as files (file:// URIs).
type outputs struct{ dir string }

func newOutputs(t *testing.T) outputs { return outputs{t.TempDir()} }

func (o outputs) uri(name string) string { return "file://" + filepath.Join(o.dir, name) }

func (o outputs) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(o.dir, name))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func code(err error) codes.Code { return status.Code(err) }

func (f *fixture) create(t *testing.T, id, bundle string, out outputs) {
	t.Helper()
	_, err := f.svc.Create(f.ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: bundle, Stdout: out.uri("stdout"), Stderr: out.uri("stderr")})
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
}

func (f *fixture) wait(t *testing.T, id, execID string) uint32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	r, err := f.svc.Wait(ctx, &taskAPI.WaitRequest{ID: id, ExecID: execID})
	if err != nil {
		t.Fatalf("wait %s %s: %v", id, execID, err)
	}
	return r.ExitStatus
}

func TestService_RunToExit(t *testing.T) {
	tests := []struct {
		name           string
		module         []byte
		status         uint32
		stdout, stderr string
		oom            bool
	}{
		{name: "hello", module: testmodules.Hello, stdout: "hello, world\n"},
		{name: "exit", module: testmodules.Exit, status: 3, stderr: "bad request\n"},
		{name: "trap", module: testmodules.Trap, status: 134, stderr: "kindling: wasm trap: "},
		{name: "oom", module: testmodules.OOM, status: 137, stderr: "memory limit of", oom: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			out := newOutputs(t)
			b := bundleWithLimit(t, 16<<20, map[string][]byte{"bin/m.wasm": tt.module}, nil, "m.wasm")
			f.create(t, "t1", b, out)
			if _, err := f.svc.Start(f.ctx, &taskAPI.StartRequest{ID: "t1"}); err != nil {
				t.Fatal(err)
			}
			if got := f.wait(t, "t1", ""); got != tt.status {
				t.Errorf("exit status %d, want %d", got, tt.status)
			}
			st, err := f.svc.State(f.ctx, &taskAPI.StateRequest{ID: "t1"})
			if err != nil || st.Status != tasktypes.Status_STOPPED || st.ExitStatus != tt.status {
				t.Errorf("state %v, %v", st, err)
			}
			del, err := f.svc.Delete(f.ctx, &taskAPI.DeleteRequest{ID: "t1"})
			if err != nil || del.ExitStatus != tt.status {
				t.Fatalf("delete: %v, %v", del, err)
			}
			if got := out.read(t, "stdout"); got != tt.stdout {
				t.Errorf("stdout %q, want %q", got, tt.stdout)
			}
			if got := out.read(t, "stderr"); !strings.HasPrefix(got, tt.stderr) && !strings.Contains(got, tt.stderr) {
				t.Errorf("stderr %q, want %q", got, tt.stderr)
			}
			want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
			if tt.oom {
				want = []string{"/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit", "/tasks/delete"}
			}
			if got := f.pub.topics(t, len(want)); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("events %v, want %v", got, want)
			}
			if _, err := f.svc.State(f.ctx, &taskAPI.StateRequest{ID: "t1"}); code(err) != codes.NotFound {
				t.Errorf("state after delete: %v", err)
			}
		})
	}
}

func TestService_CreateErrors(t *testing.T) {
	f := newFixture(t)
	out := newOutputs(t)
	tests := []struct {
		name   string
		bundle string
		want   codes.Code
	}{
		{"not wasm", bundle(t, map[string][]byte{"m.wasm": testmodules.Garbage}, nil, "/m.wasm"), codes.InvalidArgument},
		{"native binary", bundle(t, map[string][]byte{"m": []byte("\x7fELF...")}, nil, "/m"), codes.InvalidArgument},
		{"missing entrypoint", bundle(t, nil, nil, "/nothing.wasm"), codes.NotFound},
		{"no args", bundle(t, nil, nil), codes.InvalidArgument},
		{"reactor without handler", bundle(t, map[string][]byte{"m.wasm": testmodules.Reactor}, nil, "/m.wasm"), codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.Create(f.ctx, &taskAPI.CreateTaskRequest{ID: tt.name, Bundle: tt.bundle, Stdout: out.uri("o")})
			if code(err) != tt.want {
				t.Fatalf("create: %v, want code %v", err, tt.want)
			}
		})
	}
	b := bundle(t, map[string][]byte{"m.wasm": testmodules.Hello}, nil, "/m.wasm")
	f.create(t, "dup", b, out)
	if _, err := f.svc.Create(f.ctx, &taskAPI.CreateTaskRequest{ID: "dup", Bundle: b}); code(err) != codes.AlreadyExists {
		t.Fatalf("second create: %v", err)
	}
	if _, err := f.svc.Create(f.ctx, &taskAPI.CreateTaskRequest{ID: "cp", Bundle: b, Checkpoint: "/x"}); code(err) != codes.Unimplemented {
		t.Fatalf("create from checkpoint: %v", err)
	}
}

func TestService_KillAndDelete(t *testing.T) {
	f := newFixture(t)
	out := newOutputs(t)
	f.create(t, "loop", bundle(t, map[string][]byte{"loop.wasm": testmodules.Loop}, nil, "/loop.wasm"), out)
	if _, err := f.svc.Start(f.ctx, &taskAPI.StartRequest{ID: "loop"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Start(f.ctx, &taskAPI.StartRequest{ID: "loop"}); code(err) != codes.FailedPrecondition {
		t.Fatalf("second start: %v", err)
	}
	if _, err := f.svc.Delete(f.ctx, &taskAPI.DeleteRequest{ID: "loop"}); code(err) != codes.FailedPrecondition {
		t.Fatalf("delete running: %v", err)
	}
	pids, err := f.svc.Pids(f.ctx, &taskAPI.PidsRequest{ID: "loop"})
	if err != nil || len(pids.Processes) != 1 || pids.Processes[0].Pid != uint32(os.Getpid()) {
		t.Fatalf("pids %v, %v", pids, err)
	}
	for _, sig := range []syscall.Signal{0, syscall.SIGWINCH, syscall.SIGCHLD} {
		if _, err := f.svc.Kill(f.ctx, &taskAPI.KillRequest{ID: "loop", Signal: uint32(sig)}); err != nil {
			t.Fatalf("kill %v: %v", sig, err)
		}
	}
	if _, err := f.svc.Kill(f.ctx, &taskAPI.KillRequest{ID: "loop", Signal: uint32(syscall.SIGSTOP)}); code(err) != codes.Unimplemented {
		t.Fatalf("SIGSTOP: %v", err)
	}
	if _, err := f.svc.Kill(f.ctx, &taskAPI.KillRequest{ID: "loop", Signal: uint32(syscall.SIGTERM)}); err != nil {
		t.Fatal(err)
	}
	if got := f.wait(t, "loop", ""); got != 143 {
		t.Fatalf("exit status %d, want 143 (SIGTERM)", got)
	}
	if _, err := f.svc.Kill(f.ctx, &taskAPI.KillRequest{ID: "loop", Signal: uint32(syscall.SIGKILL)}); code(err) != codes.NotFound {
		t.Fatalf("kill after exit: %v", err)
	}
	if _, err := f.svc.Delete(f.ctx, &taskAPI.DeleteRequest{ID: "loop"}); err != nil {
		t.Fatal(err)
	}
	// Shutdown ends the shim only once no task is left.
	if _, err := f.svc.Shutdown(f.ctx, &taskAPI.ShutdownRequest{ID: "loop"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.shutdown:
	case <-time.After(time.Second):
		t.Fatal("no shutdown with no tasks left")
	}
}

func TestService_KillCreated(t *testing.T) {
	f := newFixture(t)
	f.create(t, "c", bundle(t, map[string][]byte{"m.wasm": testmodules.Hello}, nil, "/m.wasm"), newOutputs(t))
	if _, err := f.svc.Kill(f.ctx, &taskAPI.KillRequest{ID: "c", Signal: uint32(syscall.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if got := f.wait(t, "c", ""); got != 137 {
		t.Fatalf("status %d", got)
	}
	if _, err := f.svc.Start(f.ctx, &taskAPI.StartRequest{ID: "c"}); code(err) != codes.FailedPrecondition {
		t.Fatalf("start after kill: %v", err)
	}
	if got := f.pub.topics(t, 2); strings.Join(got, " ") != "/tasks/create /tasks/exit" {
		t.Fatalf("events %v", got)
	}
}

// TestService_Sandbox: a CRI pod sandbox runs nothing and waits for its
// kill; it is never faked as exited, and nothing can be exec'd into it.
func TestService_Sandbox(t *testing.T) {
	f := newFixture(t)
	b := bundle(t, nil, map[string]string{AnnotationContainerType: "sandbox", AnnotationSandboxID: "pod"}, "/pause")
	if _, err := f.svc.Create(f.ctx, &taskAPI.CreateTaskRequest{ID: "pod", Bundle: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Start(f.ctx, &taskAPI.StartRequest{ID: "pod"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	st, err := f.svc.State(f.ctx, &taskAPI.StateRequest{ID: "pod"})
	if err != nil || st.Status != tasktypes.Status_RUNNING {
		t.Fatalf("sandbox state %v, %v; want running", st, err)
	}
	_, err = f.svc.Exec(f.ctx, &taskAPI.ExecProcessRequest{ID: "pod", ExecID: "e", Spec: processAny(t, "/x.wasm")})
	if code(err) != codes.FailedPrecondition {
		t.Fatalf("exec into sandbox: %v", err)
	}
	if _, err := f.svc.Kill(f.ctx, &taskAPI.KillRequest{ID: "pod", Signal: uint32(syscall.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if got := f.wait(t, "pod", ""); got != 137 {
		t.Fatalf("status %d, want 137", got)
	}
}

func processAny(t *testing.T, args ...string) *anypb.Any {
	t.Helper()
	b, err := json.Marshal(specs.Process{Args: args, Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: b}
}

func TestService_Exec(t *testing.T) {
	f := newFixture(t)
	out, execOut := newOutputs(t), newOutputs(t)
	f.create(t, "c", bundle(t, map[string][]byte{"loop.wasm": testmodules.Loop, "hello.wasm": testmodules.Hello}, nil, "/loop.wasm"), out)
	if _, err := f.svc.Start(f.ctx, &taskAPI.StartRequest{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	exec := &taskAPI.ExecProcessRequest{ID: "c", ExecID: "e1", Stdout: execOut.uri("stdout"), Spec: processAny(t, "/hello.wasm")}
	if _, err := f.svc.Exec(f.ctx, exec); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Exec(f.ctx, exec); code(err) != codes.AlreadyExists {
		t.Fatalf("second exec: %v", err)
	}
	if _, err := f.svc.Start(f.ctx, &taskAPI.StartRequest{ID: "c", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	if got := f.wait(t, "c", "e1"); got != 0 {
		t.Fatalf("exec status %d", got)
	}
	if _, err := f.svc.Delete(f.ctx, &taskAPI.DeleteRequest{ID: "c", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	if got := execOut.read(t, "stdout"); got != "hello, world\n" {
		t.Fatalf("exec stdout %q", got)
	}
	// An exec still running when the init process dies dies with it.
	if _, err := f.svc.Exec(f.ctx, &taskAPI.ExecProcessRequest{ID: "c", ExecID: "e2", Spec: processAny(t, "/loop.wasm")}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Start(f.ctx, &taskAPI.StartRequest{ID: "c", ExecID: "e2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Kill(f.ctx, &taskAPI.KillRequest{ID: "c", Signal: uint32(syscall.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if got := f.wait(t, "c", "e2"); got != 137 {
		t.Fatalf("exec e2 status %d, want 137", got)
	}
	want := "/tasks/create /tasks/start /tasks/exec-added /tasks/exec-started /tasks/exit " +
		"/tasks/exec-added /tasks/exec-started /tasks/exit /tasks/exit"
	if got := f.pub.topics(t, 9); strings.Join(got, " ") != want {
		t.Fatalf("events\n %v\nwant\n %v", got, want)
	}
	f.pub.mu.Lock()
	exit := f.pub.events[4].event.(*eventstypes.TaskExit)
	f.pub.mu.Unlock()
	if exit.ID != "e1" || exit.ContainerID != "c" {
		t.Errorf("exec exit event %+v", exit)
	}
}

// TestService_StdinCloseIO: CloseIO ends stdin after what the client
// wrote, even though the client keeps its end of the FIFO open.
func TestService_StdinCloseIO(t *testing.T) {
	f := newFixture(t)
	out := newOutputs(t)
	stdin := filepath.Join(t.TempDir(), "stdin")
	w, err := fifo.OpenFifo(f.ctx, stdin, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	b := bundle(t, map[string][]byte{"echo.wasm": testmodules.Echo}, nil, "/echo.wasm")
	if _, err := f.svc.Create(f.ctx, &taskAPI.CreateTaskRequest{ID: "e", Bundle: b, Stdin: stdin, Stdout: out.uri("stdout")}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Start(f.ctx, &taskAPI.StartRequest{ID: "e"}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("first ")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // the guest reads it and waits for more
	if _, err := w.Write([]byte("second")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.CloseIO(f.ctx, &taskAPI.CloseIORequest{ID: "e", Stdin: true}); err != nil {
		t.Fatal(err)
	}
	if got := f.wait(t, "e", ""); got != 0 {
		t.Fatalf("status %d", got)
	}
	if got := out.read(t, "stdout"); got != "first second" {
		t.Fatalf("stdout %q", got)
	}
}

func TestService_StatsUpdateConnect(t *testing.T) {
	f := newFixture(t)
	f.create(t, "c", bundle(t, map[string][]byte{"m.wasm": testmodules.Hello}, nil, "/m.wasm"), newOutputs(t))
	limit := int64(64 << 20)
	res, err := json.Marshal(specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Update(f.ctx, &taskAPI.UpdateTaskRequest{ID: "c", Resources: &anypb.Any{TypeUrl: "x", Value: res}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Start(f.ctx, &taskAPI.StartRequest{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	f.wait(t, "c", "")
	st, err := f.svc.Stats(f.ctx, &taskAPI.StatsRequest{ID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := typeurl.UnmarshalAny(st.Stats)
	if err != nil {
		t.Fatalf("decode stats (%s): %v", st.Stats.TypeUrl, err)
	}
	m, ok := v.(*v1.Metrics)
	if !ok || m.Memory.Usage.Limit != 64<<20 || m.Memory.Usage.Usage != 65536 {
		t.Fatalf("stats %T %+v", v, v)
	}
	c, err := f.svc.Connect(f.ctx, &taskAPI.ConnectRequest{ID: "c"})
	if err != nil || c.ShimPid != uint32(os.Getpid()) {
		t.Fatalf("connect %v, %v", c, err)
	}
	if _, err := f.svc.ResizePty(f.ctx, &taskAPI.ResizePtyRequest{ID: "c", Width: 80, Height: 24}); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"pause":      func() error { _, err := f.svc.Pause(f.ctx, &taskAPI.PauseRequest{ID: "c"}); return err },
		"resume":     func() error { _, err := f.svc.Resume(f.ctx, &taskAPI.ResumeRequest{ID: "c"}); return err },
		"checkpoint": func() error { _, err := f.svc.Checkpoint(f.ctx, &taskAPI.CheckpointTaskRequest{ID: "c"}); return err },
	} {
		if err := call(); code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "not supported") {
			t.Errorf("%s: %v, want Unimplemented with a reason", name, err)
		}
	}
	// Shutdown is a no-op while a task remains.
	if _, err := f.svc.Shutdown(f.ctx, &taskAPI.ShutdownRequest{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.shutdown:
		t.Fatal("shut down with a task left")
	default:
	}
}

// fakeImages holds one image with a wasm layer, for container "artifact".
type fakeImages struct{}

func (fakeImages) wasmModule(ctx context.Context, id string) (string, []byte, error) {
	if id != "artifact" {
		return "", nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	return "example.com/hello:artifact", testmodules.Hello, nil
}

// TestService_WasmLayer: a module the rootfs lacks comes from the image's
// wasm layer.
func TestService_WasmLayer(t *testing.T) {
	f := newFixture(t)
	out := newOutputs(t)
	f.create(t, "artifact", bundle(t, nil, nil), out)
	if _, err := f.svc.Start(f.ctx, &taskAPI.StartRequest{ID: "artifact"}); err != nil {
		t.Fatal(err)
	}
	if got := f.wait(t, "artifact", ""); got != 0 {
		t.Fatalf("status %d", got)
	}
	if got := out.read(t, "stdout"); got != "hello, world\n" {
		t.Fatalf("stdout %q", got)
	}
	// Without a wasm layer, a missing entrypoint stays an error.
	_, err := f.svc.Create(f.ctx, &taskAPI.CreateTaskRequest{ID: "plain", Bundle: bundle(t, nil, nil, "/none.wasm")})
	if code(err) != codes.NotFound {
		t.Fatalf("create: %v", err)
	}
}
