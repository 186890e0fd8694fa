package microvm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kindling-dev/kindling/errdefs"
)

// Config configures a Manager (and the Driver built on it).
type Config struct {
	// Root holds everything the manager creates: the kernel cache, VMs
	// (memory files, pid files) and snapshots. Required. It must not
	// contain commas (QEMU option syntax).
	Root string
	// QEMU is the qemu-system-x86_64 binary; by default the one on PATH.
	QEMU string
	// Kernel is the guest kernel, a bzImage (its vmlinux is extracted and
	// cached under Root) or an ELF vmlinux; by default the newest
	// /boot/vmlinuz-*.
	Kernel string
	// CacheDir keeps the extracted kernel; by default Root/cache. Managers
	// may share one.
	CacheDir string
	// Modules is the kernel's modules directory, for the virtio modules the
	// guest needs when they are not built in; by default
	// /lib/modules/<release of Kernel>.
	Modules string
	// Agent is a static linux/amd64 kindling-agent binary (see workloads.BuildAgent);
	// by default kindling-agent next to the running executable or on PATH.
	Agent string
	// Accel forces an accelerator; by default ProbeAccel chooses KVM when
	// it is usable and TCG otherwise.
	Accel Accel
	// MemoryMB is the guest memory of a VM or function that asks for none
	// (default 128).
	MemoryMB int
	// BootTimeout bounds a boot until the agent is ready (default 2m:
	// software emulation on a busy host is slow).
	BootTimeout time.Duration
	// Logger receives the manager's log lines (default slog.Default()).
	Logger *slog.Logger
}

// Manager runs microVMs and keeps their snapshots under one root
// directory. It holds an exclusive lock on the root while open. All
// methods are safe for concurrent use; the types they take and return are
// JSON-friendly, for the daemon's HTTP API.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	guest guestEnv
	lock  *os.File // flock on Root

	mu     sync.Mutex
	vms    map[string]*vm
	snaps  map[string]*snapshot
	closed bool
}

// guestEnv is what every VM of a manager boots with.
type guestEnv struct {
	qemu    string
	accel   AccelChoice
	kernel  string // uncompressed
	cmdline string
	agent   []byte
	modules []module
}

// Directories under Root.
const (
	dirVMs       = "vms"
	dirSnapshots = "snapshots"
	dirCache     = "cache"
	dirTmp       = "tmp"
	lockFile     = "lock"
)

// NewManager checks the host (QEMU, kernel, agent), extracts the kernel
// if needed, chooses the accelerator, locks Root and cleans up what a
// crashed predecessor left there (see Reconcile). A host without QEMU or a
// kernel is an error wrapping errdefs.ErrFailedPrecondition.
func NewManager(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Root == "" {
		return nil, fmt.Errorf("microvm: Config.Root is required: %w", errdefs.ErrInvalidArgument)
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("microvm: %w", err)
	}
	if strings.ContainsAny(root, ", ") {
		return nil, fmt.Errorf("microvm: root %q must not contain commas or spaces: %w", root, errdefs.ErrInvalidArgument)
	}
	cfg.Root = root
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 128
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 2 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	for _, d := range []string{dirVMs, dirSnapshots, dirCache, dirTmp} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("microvm: %w", err)
		}
	}
	lock, err := lockRoot(root)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, log: log, lock: lock, vms: map[string]*vm{}, snaps: map[string]*snapshot{}}
	if err := reconcileLocked(root, log); err != nil {
		lock.Close()
		return nil, err
	}
	if m.guest, err = setUpGuest(ctx, cfg, log); err != nil {
		lock.Close()
		return nil, err
	}
	if err := m.loadSnapshots(); err != nil {
		lock.Close()
		return nil, err
	}
	return m, nil
}

func setUpGuest(ctx context.Context, cfg Config, log *slog.Logger) (guestEnv, error) {
	var g guestEnv
	var err error
	if g.qemu = cfg.QEMU; g.qemu == "" {
		if g.qemu, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			return g, fmt.Errorf("microvm: qemu-system-x86_64 not found (install qemu-system-x86): %w", errdefs.ErrFailedPrecondition)
		}
	}
	kernel := cfg.Kernel
	if kernel == "" {
		if kernel, err = hostKernel(); err != nil {
			return g, fmt.Errorf("microvm: %w: %w", err, errdefs.ErrFailedPrecondition)
		}
	}
	cache := cfg.CacheDir
	if cache == "" {
		cache = filepath.Join(cfg.Root, dirCache)
	}
	if g.kernel, err = prepareKernel(ctx, kernel, cache); err != nil {
		return g, fmt.Errorf("microvm: guest kernel: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	modDir := cfg.Modules
	if modDir == "" {
		modDir = filepath.Join("/lib/modules", kernelRelease(kernel))
	}
	if g.modules, err = findModules(modDir, guestModuleNames); err != nil {
		return g, fmt.Errorf("microvm: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	agentPath := cfg.Agent
	if agentPath == "" {
		if agentPath, err = findAgent(); err != nil {
			return g, fmt.Errorf("microvm: %w: %w", err, errdefs.ErrFailedPrecondition)
		}
	}
	if g.agent, err = os.ReadFile(agentPath); err != nil {
		return g, fmt.Errorf("microvm: agent: %w", err)
	}
	if err := checkExecutable(g.agent); err != nil {
		return g, fmt.Errorf("microvm: agent %s: %w", agentPath, err)
	}
	if cfg.Accel != "" {
		g.accel = AccelChoice{Accel: cfg.Accel, Reason: "set in the configuration"}
	} else if g.accel = ProbeAccel(ctx, g.qemu); g.accel.Accel == AccelTCG {
		log.Warn("microvm: KVM is not usable, falling back to TCG software emulation (much slower)", "reason", g.accel.Reason)
	}
	g.cmdline = guestCmdline(g.accel.Accel)
	return g, nil
}

// findAgent looks for kindling-agent next to the running executable, then
// on PATH.
func findAgent() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "kindling-agent")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("kindling-agent")
	if err != nil {
		return "", errors.New("no kindling-agent next to the executable or on PATH (set Config.Agent)")
	}
	return p, nil
}

// lockRoot takes an exclusive lock on root, held while the manager is
// open, so two daemons never share (and reconcile away) each other's VMs.
func lockRoot(root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, lockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("microvm: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("microvm: root %s is in use by another process: %w", root, errdefs.ErrFailedPrecondition)
	}
	return f, nil
}

// Accel is the accelerator VMs run with, and why.
func (m *Manager) Accel() AccelChoice { return m.guest.accel }

// Close destroys every VM and every template snapshot (snapshots created
// through the API stay), and releases the root.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	vms := m.vms // nil entries: VMs still starting; register destroys them
	m.vms = map[string]*vm{}
	var templates []*snapshot
	for id, s := range m.snaps {
		if s != nil && s.meta.Template {
			templates = append(templates, s)
			delete(m.snaps, id)
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, v := range vms {
		if v == nil {
			continue
		}
		if err := v.destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range templates {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, fmt.Errorf("microvm: remove template %s: %w", s.meta.ID, err))
		}
	}
	os.RemoveAll(filepath.Join(m.cfg.Root, dirTmp))
	if err := m.lock.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

var idPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)

func checkID(kind, id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("microvm: %s id %q: want 1-64 letters, digits, '.', '_' or '-': %w", kind, id, errdefs.ErrInvalidArgument)
	}
	return nil
}

func newID(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

func (m *Manager) tmpFile(pattern string) (*os.File, error) {
	return os.CreateTemp(filepath.Join(m.cfg.Root, dirTmp), pattern)
}

// Reconcile cleans root after a crash of the process that used it: it
// kills every QEMU it finds for a VM under root (from each VM's pid file,
// and from the process table, by the -name every VM is started with),
// removes the VMs' files and the template snapshots, and keeps the
// snapshots created through the API. It fails if a live Manager holds the
// root. NewManager runs it.
func Reconcile(root string) error {
	root, err := filepath.Abs(root)
	if err != nil {
		return fmt.Errorf("microvm: %w", err)
	}
	lock, err := lockRoot(root)
	if err != nil {
		return err
	}
	defer lock.Close()
	return reconcileLocked(root, slog.Default())
}

func reconcileLocked(root string, log *slog.Logger) error {
	var errs []error
	vmsDir := filepath.Join(root, dirVMs)
	// Every QEMU whose name says it belongs to a VM under root.
	for _, pid := range processesNamed(vmName(vmsDir + "/")) {
		log.Info("microvm: killing a leftover QEMU", "pid", pid)
		killAndWait(pid)
	}
	entries, _ := os.ReadDir(vmsDir)
	for _, e := range entries {
		dir := filepath.Join(vmsDir, e.Name())
		if pid, ok := readPidfile(dir); ok {
			log.Info("microvm: killing a leftover QEMU", "vm", e.Name(), "pid", pid)
			killAndWait(pid)
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	snaps, _ := os.ReadDir(filepath.Join(root, dirSnapshots))
	for _, e := range snaps {
		dir := filepath.Join(root, dirSnapshots, e.Name())
		meta, err := readMeta(dir)
		if err != nil || meta.Template || strings.HasPrefix(e.Name(), ".") {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := os.RemoveAll(filepath.Join(root, dirTmp)); err != nil {
		errs = append(errs, err)
	}
	if err := os.MkdirAll(filepath.Join(root, dirTmp), 0o755); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("microvm: reconcile %s: %w", root, errors.Join(errs...))
	}
	return nil
}

// vmName is the QEMU -name of the VM whose directory is dir: how
// Reconcile recognizes its processes.
func vmName(dir string) string { return "kindling:" + dir }

// writePidfile records a QEMU's pid and start time in dir.
func writePidfile(dir string, pid int) error {
	start, err := processStart(pid)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "pid"), []byte(fmt.Sprintf("%d %d\n", pid, start)), 0o644)
}

// readPidfile returns the pid recorded in dir if that process still
// exists, is the same process (same start time) and is QEMU for dir.
func readPidfile(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		return 0, false
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscan(string(b), &pid, &start); err != nil || pid <= 0 {
		return 0, false
	}
	if s, err := processStart(pid); err != nil || s != start {
		return 0, false
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !strings.Contains(string(cmdline), vmName(dir)) {
		return 0, false
	}
	return pid, true
}

// processStart is a process's start time in clock ticks since boot.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces, in parens).
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64) // field 22: starttime
}

// processesNamed lists the processes whose command line contains s.
func processesNamed(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

// killAndWait SIGKILLs pid and waits (on a pidfd, not by polling) until
// it is gone, for at most a few seconds.
func killAndWait(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		unix.Kill(pid, unix.SIGKILL)
		return
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		return
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, err := unix.Poll(fds, int(time.Until(deadline)/time.Millisecond)+1)
		if n > 0 || (err != nil && err != unix.EINTR) {
			return
		}
	}
}
