package oci_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/image"
	"github.com/kindling-dev/kindling/internal/ocitest"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/sandbox/oci"
	"github.com/kindling-dev/kindling/sandbox/sandboxtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	ocitest.Cleanup()
	os.Exit(code)
}

var runtimes = []string{"runc", "crun"}

// tempRoot is a driver root with a short path: the agents' unix socket
// paths must fit in 108 bytes.
func tempRoot(t testing.TB) string {
	t.Helper()
	root, err := os.MkdirTemp("", "koci-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	return root
}

func newDriver(t testing.TB, runtime string) *oci.Driver {
	t.Helper()
	ocitest.RequireRuntime(t, runtime)
	ctx := context.Background()
	d, err := oci.New(ctx, oci.Config{Root: tempRoot(t), Runtime: runtime, AgentPath: ocitest.Build(t).Agent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(ctx); err != nil {
			t.Errorf("driver close: %v", err)
		}
	})
	return d
}

var (
	fixtureMu sync.Mutex
	fixtures  = map[string][]byte{}
)

// fixture is the image tarball of the fixture program with behaviour name,
// built once per test process.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	if b, ok := fixtures[name]; ok {
		return b
	}
	b := ocitest.FixtureImage(t, name)
	fixtures[name] = b
	return b
}

func TestConformance(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			ocitest.RequireRuntime(t, rt)
			sandboxtest.Run(t, func(t *testing.T) sandbox.Driver { return newDriver(t, rt) }, sandboxtest.Fixtures{
				Hello:    fixture(t, "hello"),
				Echo:     fixture(t, "echo"),
				Trap:     fixture(t, "trap"),
				Exit:     fixture(t, "exit"),
				Loop:     fixture(t, "loop"),
				OOM:      fixture(t, "oom"),
				Counter:  fixture(t, "counter"),
				Invalid:  []byte("this is not an image tarball"),
				MemoryMB: 64,
			})
		})
	}
}

// start prepares spec and starts one instance, closed at the end of the test.
func start(t *testing.T, d *oci.Driver, spec sandbox.Spec, rec *phase.Recorder) sandbox.Instance {
	t.Helper()
	ctx := context.Background()
	p, err := d.Prepare(ctx, spec, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(ctx) })
	inst, err := p.Start(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Close(ctx) })
	return inst
}

func invoke(t *testing.T, inst sandbox.Instance, req sandbox.Request, timeout time.Duration) (string, sandbox.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out bytes.Buffer
	req.Stdout = &out
	res, err := inst.Invoke(ctx, &req)
	return out.String(), res, err
}

func TestInstance_ServesManyRequests(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			d := newDriver(t, rt)
			spec := sandboxtest.Spec("counter", fixture(t, "counter"), 64)
			inst := start(t, d, spec, nil)
			// State persists within an instance (its upper dir, its /dev/shm)...
			for n := 1; n <= 3; n++ {
				out, _, err := invoke(t, inst, sandbox.Request{}, 10*time.Second)
				if want := strings.Repeat(strconv.Itoa(n), 2); err != nil || out != want {
					t.Fatalf("request %d: %q, %v; want %q", n, out, err, want)
				}
			}
			// ...and never leaks into another.
			other := start(t, d, spec, nil)
			if out, _, err := invoke(t, other, sandbox.Request{}, 10*time.Second); err != nil || out != "11" {
				t.Fatalf("new instance: %q, %v; want \"11\"", out, err)
			}
		})
	}
}

type info struct {
	Cwd              string   `json:"cwd"`
	UID              int      `json:"uid"`
	Hostname         string   `json:"hostname"`
	Interfaces       []string `json:"interfaces"`
	Env              []string `json:"env"`
	Args             []string `json:"args"`
	AgentDirReadOnly bool     `json:"agentDirReadOnly"`
	Pid              int      `json:"pid"`
	Cgroups          string   `json:"cgroups"`
	Data             string   `json:"data"`
	DataReadOnly     bool     `json:"dataReadOnly"`
}

// infoImage runs the fixture's "info" behaviour with a working directory,
// environment and default arguments.
func infoImage(t *testing.T) []byte {
	spec := ocitest.FixtureSpec(t, "info")
	spec.Ref = "ocitest/info:env"
	spec.Config.Entrypoint = []string{"/fixture", "info"}
	spec.Config.Cmd = []string{"default-arg"}
	spec.Config.Env = []string{"PATH=/bin", "FROM_IMAGE=1", "OVERRIDDEN=image"}
	spec.Config.WorkingDir = "/work"
	spec.Layers = append(spec.Layers, image.Layer{{Path: "work", Mode: os.ModeDir | 0o755}})
	return ocitest.BuildImage(t, spec)
}

func TestInstance_Environment(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			d := newDriver(t, rt)
			spec := sandboxtest.Spec("info", infoImage(t), 128)
			spec.Env = []string{"OVERRIDDEN=function", "FROM_FUNCTION=1"}
			spec.Args = []string{"a1", "a2"}
			data := t.TempDir()
			if err := os.WriteFile(filepath.Join(data, "file"), []byte("from the host"), 0o644); err != nil {
				t.Fatal(err)
			}
			spec.Mounts = []sandbox.Mount{{HostPath: data, GuestPath: "/data", ReadOnly: true}}
			inst := start(t, d, spec, nil)
			out, _, err := invoke(t, inst, sandbox.Request{Env: []string{"REQUEST_METHOD=POST"}}, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var got info
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%v: %q", err, out)
			}
			for _, kv := range []string{"PATH=/bin", "FROM_IMAGE=1", "OVERRIDDEN=function", "FROM_FUNCTION=1", "REQUEST_METHOD=POST"} {
				if !slices.Contains(got.Env, kv) {
					t.Errorf("env %v lacks %s", got.Env, kv)
				}
			}
			if slices.Contains(got.Env, "OVERRIDDEN=image") {
				t.Errorf("the function's env did not override the image's: %v", got.Env)
			}
			if !slices.Equal(got.Args, []string{"a1", "a2"}) {
				t.Errorf("args = %v, want the function's [a1 a2] instead of the image's Cmd", got.Args)
			}
			if got.Cwd != "/work" || got.UID != 0 || got.Hostname != "kindling" {
				t.Errorf("cwd %q uid %d hostname %q; want /work, 0, kindling", got.Cwd, got.UID, got.Hostname)
			}
			if !slices.Equal(got.Interfaces, []string{"lo"}) {
				t.Errorf("network interfaces %v, want only lo (no network)", got.Interfaces)
			}
			if !got.AgentDirReadOnly {
				t.Error("the agent's directory is writable from the function")
			}
			if got.Data != "from the host" || !got.DataReadOnly {
				t.Errorf("mount /data: read %q, read-only %v; want the host's file, read-only", got.Data, got.DataReadOnly)
			}
			if got.Pid == 1 {
				t.Error("the function is pid 1; the agent should be")
			}
			checkLimits(t, got.Cgroups, 128)
		})
	}
}

// checkLimits checks the cgroup limits of a function that reported its
// /proc/self/cgroup.
func checkLimits(t *testing.T, procCgroup string, memoryMB int) {
	t.Helper()
	paths := map[string]string{}
	for line := range strings.Lines(procCgroup) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) == 3 {
			for _, c := range strings.Split(parts[1], ",") {
				paths[c] = parts[2]
			}
		}
	}
	read := func(ctrl, file string) string {
		p, ok := paths[ctrl]
		if !ok {
			t.Skipf("no cgroup v1 %s controller (cgroup v2 host?): %q", ctrl, procCgroup)
		}
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctrl, p, file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if got, want := read("memory", "memory.limit_in_bytes"), strconv.Itoa(memoryMB<<20); got != want {
		t.Errorf("memory limit %s, want %s", got, want)
	}
	quota, _ := strconv.Atoi(read("cpu", "cpu.cfs_quota_us"))
	period, _ := strconv.Atoi(read("cpu", "cpu.cfs_period_us"))
	if want := max(float64(memoryMB)/1024, oci.DefaultMinCPUs); float64(quota)/float64(period) != want {
		t.Errorf("cpu quota %d/%d, want %.3f CPUs", quota, period, want)
	}
	if got := read("pids", "pids.max"); got != strconv.Itoa(oci.DefaultPidsLimit) {
		t.Errorf("pids.max %s, want %d", got, oci.DefaultPidsLimit)
	}
}

func TestInstance_ForkBombIsBounded(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			d := newDriver(t, rt)
			inst := start(t, d, sandboxtest.Spec("forkbomb", fixture(t, "forkbomb"), 64), nil)
			re := regexp.MustCompile(`^forked (\d+), then: resource temporarily unavailable\n$`)
			for round := 0; round < 2; round++ { // the second round finds the pids released
				out, _, err := invoke(t, inst, sandbox.Request{}, 20*time.Second)
				m := re.FindStringSubmatch(out)
				if err != nil || m == nil {
					t.Fatalf("round %d: %q, %v", round, out, err)
				}
				if n, _ := strconv.Atoi(m[1]); n < 1 || n >= oci.DefaultPidsLimit {
					t.Errorf("round %d: forked %d processes, want fewer than the limit of %d", round, n, oci.DefaultPidsLimit)
				}
			}
		})
	}
}

func TestInstance_SurvivesTimeout(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			d := newDriver(t, rt)
			inst := start(t, d, sandboxtest.Spec("loop", fixture(t, "loop"), 64), nil)
			for round := 0; round < 2; round++ {
				begin := time.Now()
				_, _, err := invoke(t, inst, sandbox.Request{}, 300*time.Millisecond)
				fe, ok := errdefs.AsFunctionError(err)
				if !ok || fe.Kind != errdefs.KindTimeout || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("round %d: %v, want a timeout", round, err)
				}
				if took := time.Since(begin); took > 3*time.Second {
					t.Errorf("round %d: timeout took %v", round, took)
				}
			}
		})
	}
}

func TestInstance_CancelRetiresInstance(t *testing.T) {
	d := newDriver(t, "runc")
	inst := start(t, d, sandboxtest.Spec("loop", fixture(t, "loop"), 64), nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := inst.Invoke(ctx, &sandbox.Request{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled invoke = %v, want context.Canceled", err)
	}
	if _, err := inst.Invoke(context.Background(), &sandbox.Request{}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("invoke after a cancel = %v, want ErrFailedPrecondition", err)
	}
}

func TestPhases(t *testing.T) {
	d := newDriver(t, "runc")
	rec := phase.NewRecorder()
	spec := sandboxtest.Spec("hello", fixture(t, "hello"), 64)
	inst := start(t, d, spec, rec)
	if _, _, err := invoke(t, inst, sandbox.Request{Phases: rec}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var names []phase.Name
	for _, ti := range rec.Timings() {
		names = append(names, ti.Name)
	}
	want := []phase.Name{phase.ArtifactLoad, oci.PhaseUnpack, phase.Compile, oci.PhaseRootfs, oci.PhaseBundle,
		phase.Instantiate, oci.PhaseReady, phase.Run}
	if !slices.Equal(names, want) {
		t.Errorf("phases %v, want %v", names, want)
	}
	// Prepared again, the image is found in the store: no load, no unpack.
	rec = phase.NewRecorder()
	p, err := d.Prepare(context.Background(), spec, rec)
	if err != nil {
		t.Fatal(err)
	}
	p.Close(context.Background())
	if ts := rec.Timings(); len(ts) != 1 || ts[0].Name != phase.Compile {
		t.Errorf("second prepare recorded %+v, want compile only", ts)
	}
}

func TestPrepare_ByName(t *testing.T) {
	d := newDriver(t, "runc")
	img, err := d.Images().ImportBytes(context.Background(), fixture(t, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"ocitest/hello", "ocitest/hello:latest", img.ID} {
		inst := start(t, d, sandbox.Spec{Name: "hello", Artifact: ref, MemoryMB: 32}, nil)
		if out, _, err := invoke(t, inst, sandbox.Request{}, 10*time.Second); err != nil || out != "hello, world\n" {
			t.Errorf("%s: %q, %v", ref, out, err)
		}
	}
}

func TestPrepare_Errors(t *testing.T) {
	d := newDriver(t, "runc")
	noCmd := ocitest.FixtureSpec(t, "hello")
	noCmd.Ref, noCmd.Config.Entrypoint = "ocitest/nocmd", nil
	named := ocitest.FixtureSpec(t, "hello")
	named.Ref, named.Config.User = "ocitest/named-user", "nobody"
	tests := []struct {
		name string
		spec sandbox.Spec
		want error
		msg  string
	}{
		{"not an image", sandboxtest.Spec("x", []byte("garbage"), 64), errdefs.ErrInvalidArgument, "not an image tarball"},
		{"no entrypoint, no cmd", sandboxtest.Spec("x", ocitest.BuildImage(t, noCmd), 64), errdefs.ErrInvalidArgument, "no entrypoint and no command"},
		{"user name", sandboxtest.Spec("x", ocitest.BuildImage(t, named), 64), errdefs.ErrInvalidArgument, "numeric uid"},
		{"zero memory", sandboxtest.Spec("x", fixture(t, "hello"), 0), errdefs.ErrInvalidArgument, "memoryMB"},
		{"unknown image", sandbox.Spec{Name: "x", Artifact: "nowhere:v1", MemoryMB: 64}, errdefs.ErrNotFound, "nowhere"},
		{"bad reference", sandbox.Spec{Name: "x", Artifact: "Bad Ref", MemoryMB: 64}, errdefs.ErrInvalidArgument, "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.Prepare(context.Background(), tc.spec, nil)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Prepare = %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestNew_Errors(t *testing.T) {
	ocitest.RequireRuntime(t, "runc")
	agent := ocitest.Build(t).Agent
	ctx := context.Background()
	root := tempRoot(t)
	d, err := oci.New(ctx, oci.Config{Root: root, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	if d.Runtime() != "runc" || d.Name() != "oci" {
		t.Errorf("runtime %q name %q", d.Runtime(), d.Name())
	}
	tests := []struct {
		name string
		cfg  oci.Config
		want error
	}{
		{"root in use", oci.Config{Root: root, AgentPath: agent}, errdefs.ErrUnavailable},
		{"no root", oci.Config{AgentPath: agent}, errdefs.ErrInvalidArgument},
		{"root too long", oci.Config{Root: "/tmp/" + strings.Repeat("r", 100), AgentPath: agent}, errdefs.ErrInvalidArgument},
		{"no such runtime", oci.Config{Root: tempRoot(t), Runtime: "no-such-runtime", AgentPath: agent}, errdefs.ErrFailedPrecondition},
		{"dynamic agent", oci.Config{Root: tempRoot(t), AgentPath: "/bin/true"}, errdefs.ErrFailedPrecondition},
		{"agent not a binary", oci.Config{Root: tempRoot(t), AgentPath: "/etc/hostname"}, errdefs.ErrFailedPrecondition},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := oci.New(ctx, tc.cfg)
			if !errors.Is(err, tc.want) {
				if d != nil {
					d.Close(ctx)
				}
				t.Fatalf("New = %v, want %v", err, tc.want)
			}
		})
	}
}
