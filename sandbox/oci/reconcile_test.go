package oci

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/internal/mountinfo"
	"github.com/kindling-dev/kindling/internal/ocitest"
	"github.com/kindling-dev/kindling/sandbox"
)

// leftovers lists what a driver rooted at root has on the host: mounts
// under root, containers in its runtimes' state and cgroups.
func leftovers(t *testing.T, root string) []string {
	t.Helper()
	var left []string
	points, err := mountinfo.Under(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range points {
		left = append(left, "mount "+p)
	}
	runtimes, _ := os.ReadDir(stateDir(root))
	for _, rt := range runtimes {
		ids, _ := os.ReadDir(filepath.Join(stateDir(root), rt.Name()))
		for _, id := range ids {
			left = append(left, "container "+rt.Name()+"/"+id.Name())
		}
	}
	cg, err := findCgroups()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range cg.all {
		if dir := filepath.Join(h, cgroupParent(root)); fileExists(dir) {
			left = append(left, "cgroup "+dir)
		}
	}
	return left
}

func TestClose_LeavesNothing(t *testing.T) {
	for _, rt := range []string{"runc", "crun"} {
		t.Run(rt, func(t *testing.T) {
			ocitest.RequireRuntime(t, rt)
			ctx := context.Background()
			root := shortTempDir(t)
			d, err := New(ctx, Config{Root: root, Runtime: rt, AgentPath: ocitest.Build(t).Agent})
			if err != nil {
				t.Fatal(err)
			}
			p, err := d.Prepare(ctx, sandbox.BytesSpec("hello", ocitest.FixtureImage(t, "hello"), 32), nil)
			if err != nil {
				t.Fatal(err)
			}
			a, err := p.Start(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := p.Start(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Close(ctx); err != nil {
				t.Fatal(err)
			}
			ai := a.(*instance)
			if fileExists(ai.bundle) || fileExists(filepath.Join(d.cg.memory, ai.cgroup)) {
				t.Errorf("a closed instance left its bundle or cgroup")
			}
			if _, err := a.Invoke(ctx, &sandbox.Request{}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("Invoke after Close = %v, want ErrFailedPrecondition", err)
			}
			_ = b // left open: the driver closes it
			if err := d.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if left := leftovers(t, root); len(left) > 0 {
				t.Errorf("driver close left %v", left)
			}
		})
	}
}

// TestReconcile_AfterCrash kills a process that runs a driver with an
// instance, then checks that Reconcile removes its container, mounts and
// cgroups, and that a new driver can use the root.
func TestReconcile_AfterCrash(t *testing.T) {
	ocitest.RequireRuntime(t, "runc")
	ctx := context.Background()
	root := shortTempDir(t)
	tarball := filepath.Join(t.TempDir(), "hello.tar")
	if err := os.WriteFile(tarball, ocitest.FixtureImage(t, "hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestReconcileHelperProcess$")
	cmd.Env = append(os.Environ(), "KINDLING_OCI_HELPER=1", "KINDLING_OCI_ROOT="+root,
		"KINDLING_OCI_AGENT="+ocitest.Build(t).Agent, "KINDLING_OCI_IMAGE="+tarball)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	started := false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "STARTED ") {
			started = true
			break
		}
	}
	if !started {
		cmd.Wait()
		t.Fatalf("helper did not start an instance")
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no cleanup at all
		t.Fatal(err)
	}
	cmd.Wait()

	left := leftovers(t, root)
	for _, kind := range []string{"mount", "container", "cgroup"} {
		if !slices.ContainsFunc(left, func(s string) bool { return strings.HasPrefix(s, kind+" ") }) {
			t.Errorf("the crashed driver left no %s (%v); the test proves nothing", kind, left)
		}
	}
	if err := Reconcile(ctx, root); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, root); len(left) > 0 {
		t.Fatalf("Reconcile left %v", left)
	}
	d, err := New(ctx, Config{Root: root, AgentPath: ocitest.Build(t).Agent})
	if err != nil {
		t.Fatal(err)
	}
	if err := Reconcile(ctx, root); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Reconcile of a root in use = %v, want ErrUnavailable", err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestReconcileHelperProcess is the driver process TestReconcile_AfterCrash
// kills: it starts one instance, says so, and waits to die.
func TestReconcileHelperProcess(t *testing.T) {
	if os.Getenv("KINDLING_OCI_HELPER") != "1" {
		t.Skip("the helper process of TestReconcile_AfterCrash")
	}
	ctx := context.Background()
	d, err := New(ctx, Config{Root: os.Getenv("KINDLING_OCI_ROOT"), AgentPath: os.Getenv("KINDLING_OCI_AGENT")})
	if err != nil {
		t.Fatal(err)
	}
	tarball, err := os.ReadFile(os.Getenv("KINDLING_OCI_IMAGE"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.Prepare(ctx, sandbox.BytesSpec("hello", tarball, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := p.Start(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("STARTED", inst.(*instance).id)
	time.Sleep(time.Minute)
	t.Fatal("not killed")
}

func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "koci-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestCheckHybridCgroups(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cgroup.controllers")
	defer func(old string) { hybridControllersFile = old }(hybridControllersFile)
	hybridControllersFile = file
	if err := CheckHybridCgroups(); err != nil {
		t.Errorf("no cgroup2 beside v1: %v", err)
	}
	os.WriteFile(file, []byte("\n"), 0o644)
	if err := CheckHybridCgroups(); err != nil {
		t.Errorf("empty cgroup2: %v", err)
	}
	os.WriteFile(file, []byte("hugetlb\n"), 0o644)
	err := CheckHybridCgroups()
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb") {
		t.Errorf("hybrid host: %v; want ErrFailedPrecondition with the workaround", err)
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "A=image", "B=1"}, []string{"A=fn", "C=2", "=bad"})
	if want := []string{"PATH=/bin", "A=fn", "B=1", "C=2"}; !slices.Equal(got, want) {
		t.Errorf("mergeEnv = %v, want %v", got, want)
	}
	if got := mergeEnv(nil, []string{"X=1"}); !slices.Equal(got, []string{"X=1", defaultPath}) {
		t.Errorf("mergeEnv without PATH = %v", got)
	}
}

func TestParseUser(t *testing.T) {
	for _, tc := range []struct {
		in       string
		uid, gid uint32
		ok       bool
	}{{"", 0, 0, true}, {"1000", 1000, 1000, true}, {"1000:50", 1000, 50, true}, {"nobody", 0, 0, false}, {"1:x", 0, 0, false}} {
		uid, gid, err := parseUser(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (uid != tc.uid || gid != tc.gid)) {
			t.Errorf("parseUser(%q) = %d, %d, %v", tc.in, uid, gid, err)
		}
	}
}

func TestCPUsFor(t *testing.T) {
	for _, tc := range []struct {
		mb   int
		want float64
	}{{64, 0.1}, {128, 0.125}, {1024, 1}, {3072, 3}} {
		if got := CPUsFor(tc.mb, DefaultMinCPUs); got != tc.want {
			t.Errorf("CPUsFor(%d) = %v, want %v", tc.mb, got, tc.want)
		}
	}
}
