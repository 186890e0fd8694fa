// Package containerdtest runs a private containerd for the end-to-end
// tests and the benchmark of the kindling shim: Debian's containerd (1.6)
// started with its root, state, sockets and configuration in a temporary
// directory, the shim binary on its PATH, the CRI plugin set up for
// host-network pods, and helpers to build and import images, to talk CRI
// like a kubelet, and to find the shim processes and mounts a test left
// behind.
//
// Nothing here needs a registry or the network: images are built in
// memory as OCI archives and imported.
package containerdtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/containerd/containerd"
	"golang.org/x/sys/unix"

	"github.com/kindling-dev/kindling/internal/mountinfo"
)

// Missing says why this host cannot run the end-to-end tests, or "" if it
// can: they need root and Debian's containerd, ctr, runc and runc shim.
func Missing() string {
	if os.Geteuid() != 0 {
		return "containerd needs root"
	}
	for _, bin := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Sprintf("%s not found on PATH (Debian packages: containerd runc)", bin)
		}
	}
	return ""
}

// Config configures a private containerd.
type Config struct {
	// Dir holds everything (root, state, sockets, config, log); it must
	// exist and is left in place by Close.
	Dir string
	// ShimDir is put first on containerd's PATH: it holds
	// containerd-shim-kindling-v1.
	ShimDir string
	// CacheDir is the shim's compilation cache (KINDLING_SHIM_CACHE_DIR).
	CacheDir string
	// SandboxImage is the CRI plugin's pause image (it must be imported
	// into namespace k8s.io before a pod runs).
	SandboxImage string
	// Runtimes maps CRI runtime handlers to containerd runtime types;
	// default {"runc": io.containerd.runc.v2, "kindling": io.containerd.kindling.v1}.
	Runtimes map[string]string
	// Debug turns on containerd's and the shims' debug logs.
	Debug bool
	// Env is added to containerd's environment, which its shims inherit.
	Env []string
}

// Daemon is a running private containerd.
type Daemon struct {
	// Dir is Config.Dir; Address is containerd's gRPC socket.
	Dir, Address string

	cmd    *exec.Cmd
	exited chan struct{}
	log    *lockedBuffer

	clientOnce sync.Once
	client     *containerd.Client
	clientErr  error
}

var configTemplate = template.Must(template.New("config").Parse(`version = 2
root = "{{.Dir}}/root"
state = "{{.Dir}}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{{.Dir}}/containerd.sock"

[ttrpc]
  address = "{{.Dir}}/containerd.sock.ttrpc"

[debug]
  level = "{{if .Debug}}debug{{else}}info{{end}}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{{.Dir}}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{.SandboxImage}}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
{{- range $handler, $type := .Runtimes}}
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{{$handler}}]
      runtime_type = "{{$type}}"
{{- end}}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{.Dir}}/cni/bin"
    conf_dir = "{{.Dir}}/cni/conf"
`))

// Start starts containerd and returns once it has booted (it says so in
// its log: readiness is signalled, not polled).
func Start(ctx context.Context, cfg Config) (*Daemon, error) {
	if cfg.Dir == "" {
		return nil, errors.New("containerdtest: Config.Dir is required")
	}
	if cfg.Runtimes == nil {
		cfg.Runtimes = map[string]string{"runc": "io.containerd.runc.v2", "kindling": "io.containerd.kindling.v1"}
	}
	var conf bytes.Buffer
	if err := configTemplate.Execute(&conf, cfg); err != nil {
		return nil, fmt.Errorf("containerd config: %w", err)
	}
	confPath := filepath.Join(cfg.Dir, "config.toml")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("write containerd config: %w", err)
	}
	for _, d := range []string{"cni/bin", "cni/conf"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	d := &Daemon{Dir: cfg.Dir, Address: filepath.Join(cfg.Dir, "containerd.sock"), exited: make(chan struct{}), log: &lockedBuffer{}}
	cmd := exec.Command("containerd", "--config", confPath)
	env := os.Environ()
	if cfg.ShimDir != "" {
		env = append(env, "PATH="+cfg.ShimDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	if cfg.CacheDir != "" {
		env = append(env, "KINDLING_SHIM_CACHE_DIR="+cfg.CacheDir)
	}
	cmd.Env = append(env, cfg.Env...)
	cmd.Dir = cfg.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	d.cmd = cmd
	booted := make(chan struct{})
	go d.readLog(stderr, booted)
	go func() {
		_ = cmd.Wait()
		close(d.exited)
	}()
	select {
	case <-booted:
		return d, nil
	case <-d.exited:
		return nil, fmt.Errorf("containerd exited while starting:\n%s", d.LogTail(30))
	case <-ctx.Done():
		_ = d.Close()
		return nil, fmt.Errorf("containerd did not boot: %w\n%s", ctx.Err(), d.LogTail(30))
	}
}

// readLog keeps containerd's log and signals its boot.
func (d *Daemon) readLog(r io.Reader, booted chan struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		d.log.writeLine(line)
		if !signalled && strings.Contains(line, "containerd successfully booted") {
			signalled = true
			close(booted)
		}
	}
}

// LogTail returns the last n lines of containerd's log (its shims log
// there too).
func (d *Daemon) LogTail(n int) string { return d.log.tail(n) }

// Client returns a containerd client (shared; closed by Close).
func (d *Daemon) Client() (*containerd.Client, error) {
	d.clientOnce.Do(func() {
		d.client, d.clientErr = containerd.New(d.Address, containerd.WithTimeout(10*time.Second))
	})
	return d.client, d.clientErr
}

// Close stops containerd, ends the shim processes it left (tests check
// there are none before calling it), and unmounts whatever is still
// mounted under Dir.
func (d *Daemon) Close() error {
	var errs []error
	if d.client != nil {
		errs = append(errs, d.client.Close())
	}
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
	}
	if pids, err := d.ShimPIDs(); err == nil {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	mounts, err := d.Mounts()
	errs = append(errs, err)
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// ShimPIDs returns the shim processes (any runtime) serving this
// containerd.
func (d *Daemon) ShimPIDs() ([]int, error) {
	return ShimPIDs(d.Address)
}

// ShimPIDs returns the shim processes serving the containerd at address:
// those given "-address address", as containerd starts every shim. With
// names, only those whose program has one of these base names.
func ShimPIDs(address string, names ...string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(names) > 0 && !slices.Contains(names, filepath.Base(args[0])) {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == address {
				pids = append(pids, pid)
				break
			}
		}
	}
	sort.Ints(pids)
	return pids, nil
}

// Mounts returns the mount points under Dir, deepest first.
func (d *Daemon) Mounts() ([]string, error) {
	return MountsUnder(d.Dir)
}

// MountsUnder returns the mount points under dir, deepest first.
func MountsUnder(dir string) ([]string, error) { return mountinfo.Under(dir) }

// lockedBuffer keeps the last lines of a log.
type lockedBuffer struct {
	mu    sync.Mutex
	lines []string
}

const keepLines = 2000

func (b *lockedBuffer) writeLine(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, s)
	if len(b.lines) > 2*keepLines {
		b.lines = append([]string(nil), b.lines[len(b.lines)-keepLines:]...)
	}
}

func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > len(b.lines) {
		n = len(b.lines)
	}
	return strings.Join(b.lines[len(b.lines)-n:], "\n")
}
