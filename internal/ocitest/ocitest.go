// Package ocitest holds what tests and benchmarks of the oci sandbox need:
// skip helpers that say what is missing, the static binaries (the agent and
// the fixture program) built once per test process, fixture images built
// from them, and the crun cgroup workaround of this project's machines.
package ocitest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kindling-dev/kindling/image"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: containers mount overlayfs and create cgroups")
	}
}

// RequireRuntime skips the test unless it runs as root and the OCI runtime
// (runc, crun) is installed, and returns the runtime's path. For crun it
// applies FixHybridCgroups first.
func RequireRuntime(t testing.TB, name string) string {
	t.Helper()
	RequireRoot(t)
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("needs %s (Debian package %s): %v", name, name, err)
	}
	if filepath.Base(name) == "crun" {
		FixHybridCgroups(t)
	}
	return path
}

// FixHybridCgroups applies the workaround crun needs on hosts in cgroup
// "hybrid mode" (cgroup v1 hierarchies plus a cgroup2 at
// /sys/fs/cgroup/unified holding controllers, e.g. hugetlb): each
// controller of the cgroup2 is mounted as its own v1 hierarchy under
// /sys/fs/cgroup, which moves it off the cgroup2. The mounts are left in
// place: they are what every later crun run needs too.
func FixHybridCgroups(t testing.TB) {
	t.Helper()
	ctrls, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
	if err != nil {
		return // not hybrid
	}
	for _, c := range strings.Fields(string(ctrls)) {
		dir := filepath.Join("/sys/fs/cgroup", c)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("crun cgroup workaround: %v", err)
		}
		if err := unix.Mount("cgroup", dir, "cgroup", 0, c); err != nil && !errors.Is(err, unix.EBUSY) {
			t.Fatalf("crun cgroup workaround: mount -t cgroup -o %s cgroup %s: %v", c, dir, err)
		}
	}
}

// Binaries are the static programs the tests put into containers.
type Binaries struct {
	Agent   string // kindling-agent
	Fixture string // the multi-behaviour test program (see package fixture)
}

var (
	buildOnce sync.Once
	buildDir  string
	bins      Binaries
	buildErr  error
)

// Build builds the agent and the fixture program (static, linux) once per
// test process and returns their paths. Call Cleanup from TestMain to
// remove them.
func Build(t testing.TB) Binaries {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "kindling-ocitest-")
		if buildErr != nil {
			return
		}
		buildErr = goBuild(buildDir, "./cmd/kindling-agent", "./internal/ocitest/fixture")
		bins = Binaries{Agent: filepath.Join(buildDir, "kindling-agent"), Fixture: filepath.Join(buildDir, "fixture")}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bins
}

// Cleanup removes what Build built.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// goBuild builds static linux binaries of pkgs (relative to the repository
// root) into dir.
func goBuild(dir string, pkgs ...string) error {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return errors.New("ocitest: cannot locate the repository")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command("go", append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", dir + "/"}, pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ocitest: go build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// FixtureSpec is the image of the fixture program with the given
// behaviour: one layer holding /fixture, entrypoint ["/fixture", behaviour].
func FixtureSpec(t testing.TB, behaviour string) image.BuildSpec {
	t.Helper()
	return image.BuildSpec{
		Ref:    "ocitest/" + behaviour,
		Config: image.Config{Entrypoint: []string{"/fixture", behaviour}, Env: []string{"PATH=/usr/bin:/bin"}},
		Layers: []image.Layer{{{Path: "fixture", Source: Build(t).Fixture, Mode: 0o755}}},
	}
}

// FixtureImage is the docker-archive of FixtureSpec(t, behaviour).
func FixtureImage(t testing.TB, behaviour string) []byte {
	t.Helper()
	return BuildImage(t, FixtureSpec(t, behaviour))
}

// BuildImage builds an image tarball.
func BuildImage(t testing.TB, spec image.BuildSpec) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := image.Build(&buf, spec); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
