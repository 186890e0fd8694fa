package microvm

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kindling-dev/kindling/agent"
	"github.com/kindling-dev/kindling/sandbox/microvm/internal/qmp"
)

// Console lines the guest agent prints in --init mode (see
// cmd/kindling-agent): when it starts, and each time it waits for the host.
const (
	lineInit    = "kindling-agent: init"
	lineWaiting = "kindling-agent: waiting for the host"
	// lineOOM is what the guest kernel's OOM killer prints.
	lineOOM = "Out of memory: Killed process"
	// linePanic starts a guest kernel panic.
	linePanic = "Kernel panic"
)

// machineConfig is everything one QEMU process is started with. A VM
// restored from a snapshot must be started with the same machine (memory,
// devices, kernel) as the VM the snapshot was taken from.
type machineConfig struct {
	QEMU     string `json:"-"`
	Accel    Accel  `json:"accel"`
	Kernel   string `json:"kernel"`
	Initrd   string `json:"initrd"`
	Cmdline  string `json:"cmdline"`
	MemoryMB int    `json:"memoryMB"`
}

// machine is one QEMU process and the daemon's ends of its channels: the
// QMP monitor, the agent's virtio-serial port and the serial console, each
// a socketpair handed to QEMU as an inherited descriptor, so nothing is
// ever connected by polling a path.
type machine struct {
	cmd     *exec.Cmd
	qmp     *qmp.Client
	agent   net.Conn
	console *console

	exited  chan struct{} // closed when QEMU has exited
	waitErr error         // QEMU's exit status, set before exited closes

	killOnce sync.Once
}

// launch describes how to start one QEMU.
type launch struct {
	machineConfig
	// Name tags the process (-name); Reconcile finds leftovers by it.
	Name string
	// MemPath backs guest RAM; Shared maps it MAP_SHARED (share=on), so
	// the file holds the guest's memory and the VM can be snapshotted;
	// otherwise the mapping is private copy-on-write (a clone).
	MemPath string
	Shared  bool
	// State, when set, is a saved device state to restore (-incoming):
	// QEMU starts paused and waits for migrate-incoming.
	State *os.File
}

func (l *launch) args() []string {
	mem := strconv.Itoa(l.MemoryMB) + "M"
	share := "off"
	if l.Shared {
		share = "on"
	}
	args := []string{
		"-name", l.Name,
		"-machine", "microvm,acpi=on,memory-backend=mem",
		"-accel", string(l.Accel),
		"-smp", "1",
		"-m", mem,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-object", "memory-backend-file,id=mem,size=" + mem + ",mem-path=" + l.MemPath + ",share=" + share,
		"-chardev", "socket,id=qmp,fd=3", "-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=agent,fd=4",
		"-chardev", "socket,id=con,fd=5", "-serial", "chardev:con",
		"-device", "virtio-serial-device,max_ports=2",
		"-device", "virtserialport,chardev=agent,name=kindling",
	}
	if l.Accel == AccelKVM {
		args = append(args, "-cpu", "host")
	}
	if l.State != nil {
		// The guest's memory already holds the kernel: QEMU need not
		// load it again (microvm puts no firmware for it in RAM blocks).
		args = append(args, "-S", "-incoming", "defer")
	} else {
		args = append(args, "-kernel", l.Kernel, "-initrd", l.Initrd, "-append", l.Cmdline)
	}
	return args
}

// startMachine starts QEMU and connects to its monitor. The guest runs
// at once unless the launch restores a state.
func startMachine(ctx context.Context, l *launch) (_ *machine, err error) {
	var parent, child [3]*os.File
	defer func() {
		for i := range parent {
			if child[i] != nil {
				child[i].Close()
			}
			if parent[i] != nil {
				parent[i].Close()
			}
		}
	}()
	for i := range parent {
		if parent[i], child[i], err = socketpair(); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(l.QEMU, l.args()...)
	cmd.ExtraFiles = []*os.File{child[0], child[1], child[2]}
	if l.State != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, l.State) // fd 6
	}
	// QEMU reports start-up errors on stderr; keep them for the error.
	var stderr strings.Builder
	cmd.Stderr = &limitedWriter{w: &stderr, n: 8 << 10}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !testNoDeathSignal {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL // a crashed daemon leaves no QEMU behind
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	m := &machine{cmd: cmd, console: newConsole(), exited: make(chan struct{})}
	go func() {
		m.waitErr = cmd.Wait()
		if s := strings.TrimSpace(stderr.String()); s != "" {
			m.waitErr = fmt.Errorf("%v: %s", m.waitErr, s)
		}
		close(m.exited)
	}()
	conns := make([]net.Conn, 3)
	for i := range parent {
		if conns[i], err = net.FileConn(parent[i]); err != nil {
			break
		}
	}
	// The daemon's ends close when QEMU exits: a blocked read returns.
	go func() {
		<-m.exited
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if err != nil {
		m.kill()
		return nil, fmt.Errorf("qemu channel: %w", err)
	}
	m.agent = conns[1]
	go m.console.run(conns[2])
	if m.qmp, err = qmp.New(ctx, conns[0]); err != nil {
		m.kill()
		return nil, m.exitError(fmt.Errorf("qemu monitor: %w", err))
	}
	return m, nil
}

// restore loads the saved device state the machine was launched with and
// leaves the VM paused. Guest RAM is not in the state: it is the memory
// file itself (x-ignore-shared), mapped copy-on-write.
func (m *machine) restore(ctx context.Context) error {
	events, unsubscribe := m.qmp.Subscribe("MIGRATION")
	defer unsubscribe()
	if err := m.qmp.SetCapabilities(ctx, map[string]bool{"x-ignore-shared": true, "events": true}); err != nil {
		return m.exitError(err)
	}
	if err := m.qmp.MigrateIncoming(ctx, "fd:6"); err != nil {
		return m.exitError(err)
	}
	if err := m.qmp.WaitMigration(ctx, events); err != nil {
		// QEMU exits after a failed incoming migration, saying why.
		select {
		case <-m.exited:
		case <-time.After(time.Second):
		}
		return m.exitError(fmt.Errorf("the device state does not load (corrupt, or saved by another QEMU): %w: %w", ErrCorruptSnapshot, err))
	}
	return nil
}

// waitReady waits for the agent's readiness byte, or for QEMU to exit.
func (m *machine) waitReady(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- agent.WaitReady(m.agent) }()
	select {
	case err := <-done:
		if err != nil {
			return m.exitError(err)
		}
		return nil
	case <-ctx.Done():
		m.kill()
		return m.exitError(fmt.Errorf("waiting for the agent: %w", ctx.Err()))
	}
}

// exitError adds what is known about the guest to err: QEMU's exit status
// and the end of the console.
func (m *machine) exitError(err error) error {
	select {
	case <-m.exited:
		err = fmt.Errorf("%w (qemu exited: %v)", err, m.waitErr)
	default:
	}
	if tail := m.console.tail(1500); tail != "" {
		err = fmt.Errorf("%w\nguest console:\n%s", err, tail)
	}
	if lines := m.console.lines("kindling-agent", 10); len(lines) > 0 {
		err = fmt.Errorf("%w\nagent lines on the console:\n%s", err, strings.Join(lines, "\n"))
	}
	return err
}

// kill stops QEMU at once and waits for it to exit.
func (m *machine) kill() {
	m.killOnce.Do(func() {
		if m.cmd.Process != nil {
			m.cmd.Process.Kill()
		}
	})
	<-m.exited
}

// quit asks QEMU to exit (it flushes nothing the daemon needs), falling
// back to kill.
func (m *machine) quit(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if m.qmp.Quit(ctx) == nil {
		select {
		case <-m.exited:
			return
		case <-ctx.Done():
		}
	}
	m.kill()
}

func (m *machine) pid() int { return m.cmd.Process.Pid }

func socketpair() (parent, child *os.File, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "daemon"), os.NewFile(uintptr(fds[1]), "qemu"), nil
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
	n  int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.n - l.w.Len(); room > 0 {
		if len(p) > room {
			l.w.Write(p[:room])
		} else {
			l.w.Write(p)
		}
	}
	return len(p), nil
}

// testNoDeathSignal lets a test leave QEMUs behind a killed daemon, for
// Reconcile to find.
var testNoDeathSignal bool
