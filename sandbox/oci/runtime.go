package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kindling-dev/kindling/errdefs"
)

// runtimeCLI drives an OCI runtime (runc, crun) through its command line.
// Both take the same commands and flags for what kindling uses.
type runtimeCLI struct {
	path  string // the binary
	name  string // its base name: "runc", "crun"
	state string // --root: where the runtime keeps its containers' state
}

func newRuntimeCLI(binary, stateRoot string) (*runtimeCLI, error) {
	path, err := exec.LookPath(binary)
	if err != nil {
		return nil, fmt.Errorf("oci: runtime %q: %v: %w", binary, err, errdefs.ErrFailedPrecondition)
	}
	name := filepath.Base(path)
	return &runtimeCLI{path: path, name: name, state: filepath.Join(stateRoot, name)}, nil
}

func (r *runtimeCLI) command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, r.path, append([]string{"--root", r.state}, args...)...)
}

// run creates container id from bundle and starts its process without
// waiting for it (`run --detach`: one command instead of create and start,
// each of which costs a runtime start-up), and returns the pid of the
// container's init. The container's stdio (the agent's own diagnostics)
// and the runtime's errors go to log.
func (r *runtimeCLI) run(ctx context.Context, id, bundle string, log *os.File) (int, error) {
	pidFile := filepath.Join(bundle, "pid")
	cmd := r.command(ctx, "run", "--detach", "--bundle", bundle, "--pid-file", pidFile, id)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s run: %w: %s", r.name, err, tail(log.Name()))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("%s run: %w", r.name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s run: bad pid file %q", r.name, b)
	}
	return pid, nil
}

// delete kills (if needed) and deletes container id: its processes,
// cgroups and state.
func (r *runtimeCLI) delete(ctx context.Context, id string) error {
	return r.exec(ctx, "delete", "--force", id)
}

func (r *runtimeCLI) exec(ctx context.Context, args ...string) error {
	var out bytes.Buffer
	cmd := r.command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", r.name, args[0], err, strings.TrimSpace(out.String()))
	}
	return nil
}

// containers lists the containers in the runtime's state directory.
func (r *runtimeCLI) containers() ([]string, error) {
	entries, err := os.ReadDir(r.state)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// tail returns the end of a log file, for error messages.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	const max = 2048
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// hybridControllersFile is where crun looks for controllers of a cgroup2
// hierarchy mounted beside cgroup v1 ones ("hybrid mode").
var hybridControllersFile = "/sys/fs/cgroup/unified/cgroup.controllers"

// CheckHybridCgroups reports whether crun can run on this host. crun
// refuses "cgroups in hybrid mode": cgroup v1 hierarchies plus a cgroup2 at
// /sys/fs/cgroup/unified that holds controllers (on this project's
// machines, hugetlb). Mounting each such controller as a v1 hierarchy
// (`mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb`) moves it off
// the cgroup2 and makes crun work for as long as the mount stays. The error
// wraps errdefs.ErrFailedPrecondition and says so.
func CheckHybridCgroups() error {
	b, err := os.ReadFile(hybridControllersFile)
	if err != nil {
		return nil // no cgroup2 beside v1: not hybrid
	}
	ctrls := strings.Fields(string(b))
	if len(ctrls) == 0 {
		return nil
	}
	var fix []string
	for _, c := range ctrls {
		fix = append(fix, fmt.Sprintf("mkdir -p /sys/fs/cgroup/%[1]s && mount -t cgroup -o %[1]s cgroup /sys/fs/cgroup/%[1]s", c))
	}
	return fmt.Errorf("oci: crun refuses cgroups in hybrid mode: the cgroup2 hierarchy at /sys/fs/cgroup/unified holds controllers %s; "+
		"mount them as cgroup v1 hierarchies (%s) and keep the mounts, or use runc: %w",
		strings.Join(ctrls, ","), strings.Join(fix, "; "), errdefs.ErrFailedPrecondition)
}
