package microvm

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/sandbox/microvm/internal/cpio"
	"github.com/kindling-dev/kindling/sandbox/microvm/internal/vmlinux"
)

// Paths inside the guest's initramfs.
const (
	guestFunction = "/fn"
	guestModules  = "/lib/modules/kindling"
	guestPort     = "/dev/vport0p1" // the one virtio-serial port (port 1 of device 0)
)

// guestModuleNames are the kernel modules the agent's channel needs, when
// the kernel does not have them built in: virtio over MMIO (how microvm
// attaches devices) and the virtio console (virtio-serial ports).
var guestModuleNames = []string{"virtio_mmio", "virtio_console"}

// module is one kernel module to load in the guest, in order.
type module struct {
	Name string // file name inside the initramfs
	Data []byte
}

// findModules resolves names and their dependencies against the host's
// /lib/modules/<release> (modules.dep, modules.builtin) and returns them
// in load order. A module built into the kernel needs nothing.
func findModules(dir string, names []string) ([]module, error) {
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			builtin[moduleName(line)] = true
		}
	}
	deps := map[string][]string{} // relative path -> dependency paths
	byName := map[string]string{} // module name -> relative path
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		var missing []string
		for _, n := range names {
			if !builtin[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("guest kernel modules %v: %w", missing, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		path, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[path] = strings.Fields(rest)
		byName[moduleName(path)] = path
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	var order []string
	seen := map[string]bool{}
	var visit func(path string, depth int) error
	visit = func(path string, depth int) error {
		if seen[path] {
			return nil
		}
		if depth > 32 {
			return fmt.Errorf("modules.dep: dependency loop at %s", path)
		}
		seen[path] = true
		for _, d := range deps[path] {
			if err := visit(d, depth+1); err != nil {
				return err
			}
		}
		order = append(order, path)
		return nil
	}
	for _, n := range names {
		if builtin[n] {
			continue
		}
		path, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("guest kernel module %s: not in %s/modules.dep", n, dir)
		}
		if err := visit(path, 0); err != nil {
			return nil, err
		}
	}
	mods := make([]module, 0, len(order))
	for i, path := range order {
		if !strings.HasSuffix(path, ".ko") {
			return nil, fmt.Errorf("guest kernel module %s: compressed modules are not supported", path)
		}
		data, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil {
			return nil, fmt.Errorf("guest kernel module: %w", err)
		}
		// The agent loads them in name order.
		mods = append(mods, module{Name: fmt.Sprintf("%02d-%s", i, filepath.Base(path)), Data: data})
	}
	return mods, nil
}

// moduleName turns "kernel/drivers/char/virtio_console.ko" into
// "virtio_console".
func moduleName(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// guestCmdline is the kernel command line of every VM. The agent is the
// init (/init); the arguments after "--" are its own. The kernel options
// trim a boot that software emulation makes slow: no crypto self-tests, no
// LSMs or audit, no page zeroing on allocation, no mitigations, and under
// TCG the TSC frequency given rather than calibrated (see hostTSCkHz).
func guestCmdline(accel Accel) string {
	kernel := []string{
		"console=ttyS0", "quiet", "panic=-1", "8250.nr_uarts=1",
		"cryptomgr.notests", "init_on_alloc=0", "apparmor=0", "security=none", "audit=0",
		"mitigations=off", "random.trust_cpu=on",
		"rdinit=/init",
	}
	if accel == AccelTCG {
		if khz := hostTSCkHz(); khz > 0 {
			kernel = append(kernel, fmt.Sprintf("tsc_early_khz=%d", khz))
		}
		kernel = append(kernel, "tsc=reliable")
	}
	init := []string{"--init", "--modules", guestModules, "--device", guestPort, "--dir", "/tmp", guestFunction}
	return strings.Join(kernel, " ") + " -- " + strings.Join(init, " ")
}

// initramfs builds the guest's root filesystem: the agent as /init, the
// function as /fn, the kernel modules, and the few nodes init needs before
// it mounts /dev (the console).
func initramfs(agentBin, fn []byte, mods []module) ([]byte, error) {
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	for _, d := range []string{"dev", "proc", "sys", "tmp", "lib", "lib/modules", guestModules} {
		w.Dir(d, 0o755)
	}
	w.CharDev("dev/console", 0o600, 5, 1)
	w.CharDev("dev/null", 0o666, 1, 3)
	w.File("init", 0o755, agentBin)
	w.File(guestFunction, 0o755, fn)
	for _, m := range mods {
		w.File(guestModules+"/"+m.Name, 0o644, m.Data)
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkExecutable accepts a static linux/amd64 ELF executable: what the
// guest can run without a libc.
func checkExecutable(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return fmt.Errorf("ELF for %s, want linux/amd64: %w", f.Machine, errdefs.ErrInvalidArgument)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("ELF of type %s is not an executable: %w", f.Type, errdefs.ErrInvalidArgument)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dynamically linked executable (the guest has no libc; build with CGO_ENABLED=0): %w", errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// hostKernel finds the newest /boot/vmlinuz-* and its modules directory.
func hostKernel() (kernel string, err error) {
	matches, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(matches) == 0 {
		return "", errors.New("no kernel in /boot/vmlinuz-* (install linux-image-amd64, or set Config.Kernel)")
	}
	// Newest by modification time.
	best, bestT := "", int64(0)
	for _, m := range matches {
		if st, err := os.Stat(m); err == nil && st.ModTime().UnixNano() > bestT {
			best, bestT = m, st.ModTime().UnixNano()
		}
	}
	return best, nil
}

// kernelRelease returns the release of the kernel at path: from its
// bzImage header, else from a vmlinuz-<release> file name.
func kernelRelease(path string) string {
	f, err := os.Open(path)
	if err == nil {
		defer f.Close()
		hdr := make([]byte, 64<<10)
		n, _ := f.Read(hdr)
		if v := vmlinux.Version(hdr[:n]); v != "" {
			return v
		}
	}
	base := filepath.Base(path)
	for _, p := range []string{"vmlinuz-", "vmlinux-", "bzImage-"} {
		if strings.HasPrefix(base, p) {
			return strings.TrimPrefix(base, p)
		}
	}
	return ""
}

// prepareKernel returns an uncompressed kernel for path, extracted into
// cacheDir once.
func prepareKernel(ctx context.Context, path, cacheDir string) (string, error) {
	return vmlinux.Cached(ctx, path, cacheDir)
}
