package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/containerd/containerd/api/types"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// task is one container: its init process, its execs, and its root
// filesystem, which the shim mounts from what containerd passes.
type task struct {
	id      string
	bundle  string
	spec    *specs.Spec
	sandbox bool   // a CRI pod sandbox: runs nothing
	rootfs  string // host path of the guest's "/"
	mounted bool   // the shim mounted rootfs and unmounts it on delete
	init    *process

	mu       sync.Mutex
	memoryMB int
	execs    map[string]*process
}

// mountRootfs makes the container's root filesystem available: the
// mounts containerd passes (a snapshot: overlay, bind) are mounted on the
// bundle's rootfs directory; without mounts the spec's root path is used
// as it is (ctr run --rootfs).
func mountRootfs(bundle string, spec *specs.Spec, rootfs []*types.Mount) (string, bool, error) {
	if len(rootfs) == 0 {
		if spec.Root == nil || spec.Root.Path == "" {
			return "", false, fmt.Errorf("no rootfs mounts and no root path in the OCI spec: %w", errdefs.ErrInvalidArgument)
		}
		p := spec.Root.Path
		if !filepath.IsAbs(p) {
			p = filepath.Join(bundle, p)
		}
		return p, false, nil
	}
	target := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(target, 0o711); err != nil {
		return "", false, fmt.Errorf("create rootfs directory: %w", err)
	}
	ms := make([]mount.Mount, 0, len(rootfs))
	for _, m := range rootfs {
		ms = append(ms, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	if err := mount.All(ms, target); err != nil {
		_ = mount.UnmountAll(target, 0)
		return "", false, fmt.Errorf("mount rootfs: %w", err)
	}
	return target, true, nil
}

// unmountRootfs undoes mountRootfs.
func (t *task) unmountRootfs() error {
	if !t.mounted {
		return nil
	}
	if err := mount.UnmountAll(t.rootfs, 0); err != nil {
		return fmt.Errorf("unmount rootfs of %s: %w", t.id, err)
	}
	t.mounted = false
	return nil
}

// process returns the init process (execID "") or an exec.
func (t *task) process(execID string) (*process, error) {
	if execID == "" {
		return t.init, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.execs[execID]
	if !ok {
		return nil, fmt.Errorf("exec %q of task %s: %w", execID, t.id, errdefs.ErrNotFound)
	}
	return p, nil
}

func (t *task) addExec(p *process) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.execs[p.id]; ok {
		return fmt.Errorf("exec %q of task %s: %w", p.id, t.id, errdefs.ErrAlreadyExists)
	}
	if t.execs == nil {
		t.execs = map[string]*process{}
	}
	t.execs[p.id] = p
	return nil
}

func (t *task) removeExec(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.execs, id)
}

// processes returns the init process and the execs, in a stable order.
func (t *task) processes() []*process {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := []*process{t.init}
	ids := make([]string, 0, len(t.execs))
	for id := range t.execs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		out = append(out, t.execs[id])
	}
	return out
}

func (t *task) memory() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.memoryMB
}

func (t *task) setMemory(mb int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.memoryMB = mb
}

// running reports whether any process of the task runs.
func (t *task) running() int {
	n := 0
	for _, p := range t.processes() {
		if st, _, _ := p.snapshot(); st == tasktypes.Status_RUNNING {
			n++
		}
	}
	return n
}

// release closes every process's runner and streams and unmounts the
// root filesystem. The task's processes must all have stopped.
func (t *task) release(ctx context.Context) error {
	for _, p := range t.processes() {
		p.io.close()
		p.runner.close(ctx)
	}
	if err := t.unmountRootfs(); err != nil {
		log.G(ctx).WithError(err).Error("release task")
		return err
	}
	return nil
}
