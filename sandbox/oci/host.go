package oci

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kindling-dev/kindling/internal/mountinfo"
)

// mountRootfs makes a container's root file system in bundle: the
// directories rootfs, upper and work, and over rootfs an overlay of lowers
// (top layer first).
func mountRootfs(bundle string, lowers []string) error {
	rootfs, upper, work := filepath.Join(bundle, "rootfs"), filepath.Join(bundle, "upper"), filepath.Join(bundle, "work")
	for _, dir := range []string{rootfs, upper, work} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return mountOverlay(rootfs, lowers, upper, work)
}

// mountOverlay mounts an overlay at target: lowers (top layer first) read
// only, upper and work for the instance's own changes.
func mountOverlay(target string, lowers []string, upper, work string) error {
	data := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(data) >= os.Getpagesize() {
		return fmt.Errorf("overlay mount options of %d bytes exceed a page: too many layers or too long a root path", len(data))
	}
	if err := unix.Mount("overlay", target, "overlay", unix.MS_NODEV, data); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", target, err)
	}
	return nil
}

// unmount unmounts target, detaching it lazily if it is still busy.
func unmount(target string) error {
	err := unix.Unmount(target, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(target, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// cgroupParent is the cgroup (relative to each hierarchy's root) under
// which a driver rooted at root creates its containers' cgroups, so that
// Reconcile finds exactly that driver's leftovers.
func cgroupParent(root string) string {
	sum := sha256.Sum256([]byte(root))
	return "/kindling/" + hex.EncodeToString(sum[:6])
}

// cgroups knows where the host's cgroup hierarchies are.
type cgroups struct {
	v2     bool     // memory is controlled by a cgroup2 hierarchy
	memory string   // mount point of the hierarchy with the memory controller
	all    []string // mount points of every cgroup hierarchy
}

func findCgroups() (*cgroups, error) {
	mounts, err := mountinfo.Read()
	if err != nil {
		return nil, fmt.Errorf("find cgroups: %w", err)
	}
	cg := &cgroups{}
	for _, m := range mounts {
		switch m.FSType {
		case "cgroup":
			cg.all = append(cg.all, m.Point)
			if slices.Contains(strings.Split(m.Super, ","), "memory") {
				cg.memory = m.Point
			}
		case "cgroup2":
			cg.all = append(cg.all, m.Point)
			if b, err := os.ReadFile(filepath.Join(m.Point, "cgroup.controllers")); err == nil &&
				slices.Contains(strings.Fields(string(b)), "memory") {
				cg.memory, cg.v2 = m.Point, true
			}
		}
	}
	if cg.memory == "" {
		return nil, errors.New("find cgroups: no hierarchy has the memory controller")
	}
	return cg, nil
}

// oomKills returns how many processes the kernel's OOM killer has killed
// in the cgroup at path (relative to the hierarchies' roots).
func (cg *cgroups) oomKills(path string) (int64, error) {
	file := "memory.oom_control"
	if cg.v2 {
		file = "memory.events"
	}
	return readKey(filepath.Join(cg.memory, path, file), "oom_kill")
}

// memoryUsage returns the cgroup's current memory use.
func (cg *cgroups) memoryUsage(path string) uint64 {
	file := "memory.usage_in_bytes"
	if cg.v2 {
		file = "memory.current"
	}
	b, err := os.ReadFile(filepath.Join(cg.memory, path, file))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// readKey reads the value of key in a file of "key value" lines.
func readKey(file, key string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && k == key {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", file, key)
}

// removeTree removes the cgroup directory rel (and the cgroups below it)
// from every hierarchy, killing any process left in them.
func (cg *cgroups) removeTree(rel string) error {
	var errs []error
	for _, h := range cg.all {
		errs = append(errs, removeCgroup(filepath.Join(h, rel)))
	}
	return errors.Join(errs...)
}

func removeCgroup(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			errs = append(errs, removeCgroup(filepath.Join(dir, e.Name())))
		}
	}
	// A cgroup can be removed once it has no processes; the ones killed
	// here leave it within a few milliseconds.
	for i := 0; ; i++ {
		killProcs(dir)
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			break
		}
		if !errors.Is(err, unix.EBUSY) || i == 100 {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return errors.Join(errs...)
}

func killProcs(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// pruneParents removes rel's empty ancestors in every hierarchy (up to and
// including the top one), ignoring those still in use.
func (cg *cgroups) pruneParents(rel string) {
	for _, h := range cg.all {
		for dir := filepath.Join(h, rel); dir != h && strings.HasPrefix(dir, h+"/"); dir = filepath.Dir(dir) {
			if unix.Rmdir(dir) != nil {
				break
			}
		}
	}
}
