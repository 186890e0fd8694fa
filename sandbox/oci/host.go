package oci

import (
	"bufio"
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
)

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	point  string // where it is mounted
	fstype string
	super  string // super options, e.g. "rw,memory" for a cgroup v1 hierarchy
}

// readMounts parses /proc/self/mountinfo.
func readMounts() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root point options [optional...] - fstype source super
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, tailFields := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tailFields) < 2 {
			continue
		}
		m := mountInfo{point: unescapeMount(fields[4]), fstype: tailFields[0]}
		if len(tailFields) > 2 {
			m.super = tailFields[2]
		}
		mounts = append(mounts, m)
	}
	return mounts, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder returns the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	mounts, err := readMounts()
	if err != nil {
		return nil, err
	}
	var points []string
	for _, m := range mounts {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			points = append(points, m.point)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(points), nil
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
	mounts, err := readMounts()
	if err != nil {
		return nil, fmt.Errorf("find cgroups: %w", err)
	}
	cg := &cgroups{}
	for _, m := range mounts {
		switch m.fstype {
		case "cgroup":
			cg.all = append(cg.all, m.point)
			if slices.Contains(strings.Split(m.super, ","), "memory") {
				cg.memory = m.point
			}
		case "cgroup2":
			cg.all = append(cg.all, m.point)
			if b, err := os.ReadFile(filepath.Join(m.point, "cgroup.controllers")); err == nil &&
				slices.Contains(strings.Fields(string(b)), "memory") {
				cg.memory, cg.v2 = m.point, true
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
