package shim_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/shim"
	"github.com/kindling-dev/kindling/shim/containerdtest"
)

// Images the end-to-end tests add to containerdtest's standard ones.
const (
	exitImage  = "docker.io/kindling/exit-wasm:test"  // writes "bad request" to stderr, exits 3
	loopImage  = "docker.io/kindling/loop-wasm:test"  // spins forever
	echoImage  = "docker.io/kindling/echo-wasm:test"  // copies stdin to stdout
	probeImage = "docker.io/kindling/probe-wasm:test" // reports args, env and files (testdata/probe)
	// wasmLayerImage's one layer is the raw hello module
	// (application/vnd.wasm.content.layer.v1+wasm), with an OCI config.
	wasmLayerImage = "docker.io/kindling/hello-layer:test"
	// artifactImage is the same as a CNCF wasm OCI artifact (its config
	// is application/vnd.wasm.config.v0+json).
	artifactImage = "docker.io/kindling/hello-artifact:test"
)

// The shared containerd of this test binary, started by the first test
// that needs it and stopped by TestMain.
var (
	e2eOnce   sync.Once
	e2eDaemon *containerdtest.Daemon
	e2eDir    string
	e2eErr    error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if e2eDaemon != nil {
		reports, err := e2eDaemon.RaceReports()
		if err != nil || len(reports) > 0 {
			fmt.Fprintf(os.Stderr, "race detector reports from the shim (%v):\n%s\n", err, strings.Join(reports, "\n"))
			code = 1
		}
		if err := e2eDaemon.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "close containerd:", err)
		}
	}
	if e2eDir != "" {
		_ = os.RemoveAll(e2eDir)
	}
	os.Exit(code)
}

// daemon returns the shared containerd, or skips the test when the host
// cannot run it.
// connect returns a client of the test containerd and a context in its
// default namespace that ends after a minute or with the test.
func connect(t *testing.T) (*containerd.Client, context.Context) {
	t.Helper()
	client, err := daemon(t).Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "default"), time.Minute)
	t.Cleanup(cancel)
	return client, ctx
}

func daemon(t *testing.T) *containerdtest.Daemon {
	t.Helper()
	if reason := containerdtest.Missing(); reason != "" {
		t.Skip("end-to-end test skipped: " + reason)
	}
	e2eOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if e2eDir, e2eErr = os.MkdirTemp("", "kindling-shim-e2e-"); e2eErr != nil {
			return
		}
		start := time.Now()
		e2eDaemon, e2eErr = containerdtest.Launch(ctx, containerdtest.Options{
			Dir: e2eDir,
			// Under -race the shim binary is built with the race detector
			// too; its reports fail the run (see TestMain).
			Race:  raceEnabled,
			Debug: true, // the shims' debug logs tell compile cache hits
		})
		if e2eErr != nil {
			return
		}
		probe := testmodules.BuildGo(t, "shim/testdata/probe")
		e2eErr = e2eDaemon.ImportAll(ctx,
			containerdtest.Image{Name: exitImage, Files: []containerdtest.File{{Name: "exit.wasm", Data: testmodules.Exit}}, Entrypoint: []string{"/exit.wasm"}},
			containerdtest.Image{Name: loopImage, Files: []containerdtest.File{{Name: "loop.wasm", Data: testmodules.Loop}}, Entrypoint: []string{"/loop.wasm"}},
			containerdtest.Image{Name: echoImage, Files: []containerdtest.File{{Name: "bin/echo.wasm", Data: testmodules.Echo}}, Entrypoint: []string{"echo.wasm"}, Env: []string{"PATH=/bin"}},
			containerdtest.Image{Name: probeImage, Files: []containerdtest.File{
				{Name: "probe.wasm", Data: probe},
				{Name: "etc/greeting", Data: []byte("hi from the rootfs")},
			}, Entrypoint: []string{"/probe.wasm"}, Env: []string{"PROBE=from-image"}},
			containerdtest.Image{Name: wasmLayerImage, Wasm: testmodules.Hello},
			containerdtest.Image{Name: artifactImage, Wasm: testmodules.Hello, ArtifactConfig: true},
		)
		t.Logf("containerd ready in %v", time.Since(start).Round(time.Millisecond))
	})
	if e2eErr != nil {
		t.Fatalf("start containerd: %v", e2eErr)
	}
	return e2eDaemon
}

// lockedBuffer is a bytes.Buffer safe for the IO copy goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// containerID is unique per test and call.
func containerID(t *testing.T, suffix string) string {
	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	return fmt.Sprintf("%s-%s-%d", name, suffix, time.Now().UnixNano()%1e6)
}

// run runs image once with the kindling runtime through containerd's Go
// client, as `ctr run --rm` does, and returns its output and exit status.
func run(t *testing.T, ctx context.Context, client *containerd.Client, image string, stdin string, specOpts ...oci.SpecOpts) (id, stdout, stderr string, status uint32) {
	t.Helper()
	img, err := client.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	id = containerID(t, "c")
	if image != artifactImage {
		// containerd's oci.WithImageConfig refuses the artifact's config
		// media type; its spec is built from specOpts alone.
		specOpts = append([]oci.SpecOpts{oci.WithImageConfig(img)}, specOpts...)
	}
	c, err := client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(shim.RuntimeType, nil),
		containerd.WithNewSpec(specOpts...))
	if err != nil {
		t.Fatalf("new container: %v", err)
	}
	defer func() {
		if err := c.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container: %v", err)
		}
	}()
	var out, errb lockedBuffer
	var in *strings.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	var creator cio.Creator
	if in != nil {
		creator = cio.NewCreator(cio.WithStreams(in, &out, &errb))
	} else {
		creator = cio.NewCreator(cio.WithStreams(nil, &out, &errb))
	}
	task, err := c.NewTask(ctx, creator)
	if err != nil {
		t.Fatalf("new task: %v", err)
	}
	exitCh, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	if in != nil {
		if err := task.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
			t.Fatalf("close stdin: %v", err)
		}
	}
	st := <-exitCh
	status, _, err = st.Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete task: %v", err)
	}
	return id, out.String(), errb.String(), status
}

func TestRunWithClient(t *testing.T) {
	client, ctx := connect(t)
	tests := []struct {
		name, image, stdin string
		opts               []oci.SpecOpts
		stdout, stderr     string
		status             uint32
	}{
		{name: "hello", image: containerdtest.HelloWasmImage, stdout: containerdtest.Hello},
		{name: "exit code and stderr", image: exitImage, stderr: "bad request\n", status: 3},
		{name: "stdin via PATH lookup", image: echoImage, stdin: "round trip", stdout: "round trip"},
		{
			name:  "args env rootfs",
			image: probeImage,
			opts:  []oci.SpecOpts{oci.WithProcessArgs("/probe.wasm", "/etc/greeting"), oci.WithEnv([]string{"PROBE=from-spec", "PROBE_EXIT=7"})},
			stdout: "args=[\"/etc/greeting\"]\nPROBE=from-spec\n" +
				"/etc/greeting: hi from the rootfs\n",
			stderr: "probe done\n",
			status: 7,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stdout, stderr, status := run(t, ctx, client, tt.image, tt.stdin, tt.opts...)
			if stdout != tt.stdout || stderr != tt.stderr || status != tt.status {
				t.Errorf("got stdout %q stderr %q status %d; want %q %q %d", stdout, stderr, status, tt.stdout, tt.stderr, tt.status)
			}
		})
	}
}

// TestWasmLayer runs images whose module is a wasm layer, with an OCI
// image config and with the CNCF wasm artifact's config: containerd gives
// the container an empty rootfs, and the shim reads the module from
// containerd's content store.
func TestWasmLayer(t *testing.T) {
	client, ctx := connect(t)
	for _, image := range []string{wasmLayerImage, artifactImage} {
		_, stdout, stderr, status := run(t, ctx, client, image, "", oci.WithProcessArgs("hello"))
		if status != 0 || stdout != containerdtest.Hello {
			t.Errorf("%s: status %d, stdout %q, stderr %q", image, status, stdout, stderr)
		}
	}
}

func TestPreopenedMount(t *testing.T) {
	client, ctx := connect(t)
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "input.txt"), []byte("mounted"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stdout, _, status := run(t, ctx, client, probeImage, "",
		oci.WithProcessArgs("/probe.wasm", "/data/input.txt"),
		oci.WithMounts([]specs.Mount{{Destination: "/data", Type: "bind", Source: data, Options: []string{"rbind", "ro"}}}))
	if status != 0 || !strings.Contains(stdout, "/data/input.txt: mounted\n") {
		t.Fatalf("status %d, stdout %q", status, stdout)
	}
}

// TestEvents checks the events a task publishes, in order, as a
// containerd client subscribed to them sees them.
func TestEvents(t *testing.T) {
	client, ctx := connect(t)
	subCtx, stop := context.WithCancel(ctx)
	defer stop()
	envelopes, errs := client.EventService().Subscribe(subCtx, `topic~="^/tasks/"`)
	id, _, _, _ := run(t, ctx, client, containerdtest.HelloWasmImage, "")

	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	var got []string
	for len(got) < len(want) {
		select {
		case env := <-envelopes:
			ev, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				t.Fatalf("decode %s: %v", env.Topic, err)
			}
			var cid string
			switch e := ev.(type) {
			case *eventstypes.TaskCreate:
				cid = e.ContainerID
			case *eventstypes.TaskStart:
				cid = e.ContainerID
			case *eventstypes.TaskExit:
				cid = e.ContainerID
				if e.ExitStatus != 0 || e.ID != id {
					t.Errorf("TaskExit %+v", e)
				}
			case *eventstypes.TaskDelete:
				cid = e.ContainerID
			default:
				continue
			}
			if cid == id {
				got = append(got, env.Topic)
			}
		case err := <-errs:
			t.Fatalf("subscription: %v", err)
		case <-ctx.Done():
			t.Fatalf("events so far %v: %v", got, ctx.Err())
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// TestCtrRun runs the real ctr binary, as a user would.
func TestCtrRun(t *testing.T) {
	d := daemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := containerID(t, "ctr")
	cmd := exec.CommandContext(ctx, "ctr", "--address", d.Address, "run", "--rm", "--runtime", shim.RuntimeType, containerdtest.HelloWasmImage, id)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ctr run: %v\n%s", err, stderr.String())
	}
	if stdout.String() != containerdtest.Hello {
		t.Fatalf("ctr run printed %q, want %q", stdout.String(), containerdtest.Hello)
	}
}

// shimSocket is where the shim library puts the socket of shim group
// (a pod's sandbox ID, or a container's ID) for a containerd.
func shimSocket(address, ns, group string) string {
	return fmt.Sprintf("/run/containerd/s/%x", sha256.Sum256([]byte(filepath.Join(address, ns, group))))
}

// shimsOf returns the kindling shim processes serving group id.
func shimsOf(t *testing.T, d *containerdtest.Daemon, id string) []int {
	t.Helper()
	pids, err := containerdtest.ShimPIDs(d.Address, shim.ServerBinaryName)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(b), "\x00-id\x00"+id+"\x00") {
			out = append(out, pid)
		}
	}
	return out
}

// eventually retries cond for up to 5 s: a shim exits just after
// containerd has closed its connection.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still %s after 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKillLeavesNothing kills a looping guest mid-run and checks that
// deleting it leaves no shim process, mount or socket behind.
func TestKillLeavesNothing(t *testing.T) {
	d := daemon(t)
	client, ctx := connect(t)
	img, err := client.GetImage(ctx, loopImage)
	if err != nil {
		t.Fatal(err)
	}
	id := containerID(t, "loop")
	c, err := client.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(shim.RuntimeType, nil), containerd.WithNewSpec(oci.WithImageConfig(img)))
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	exitCh, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if pids := shimsOf(t, d, id); len(pids) != 1 {
		t.Fatalf("shim processes for %s: %v, want one", id, pids)
	}
	rootfs := filepath.Join(d.Dir, "state", "io.containerd.runtime.v2.task", "default", id, "rootfs")
	if mounts, _ := containerdtest.MountsUnder(rootfs); len(mounts) == 0 {
		t.Fatalf("rootfs %s not mounted while running", rootfs)
	}
	time.Sleep(50 * time.Millisecond) // let it spin
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Running {
		t.Fatalf("status %v, %v; want running", st, err)
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-exitCh:
		if st.ExitCode() != 137 {
			t.Fatalf("exit status %d, want 137", st.ExitCode())
		}
	case <-ctx.Done():
		t.Fatal("the killed guest did not stop")
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a shim process", func() bool { return len(shimsOf(t, d, id)) == 0 })
	if mounts, _ := containerdtest.MountsUnder(filepath.Dir(rootfs)); len(mounts) != 0 {
		t.Errorf("mounts left: %v", mounts)
	}
	sock := shimSocket(d.Address, "default", id)
	eventually(t, "a shim socket", func() bool { _, err := os.Stat(sock); return os.IsNotExist(err) })
}
