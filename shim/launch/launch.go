// Package launch is the lean half of the kindling shim: the binary
// containerd runs for a task's "start" and "delete" actions
// (containerd-shim-kindling-v1, runtime type io.containerd.kindling.v1).
// It finds or starts the pod's shim server (kindling-shim-server, package
// shim) and cleans up after a server that died. containerd runs it for
// every container, on the cold-start path, so it links only containerd's
// shim library: no wasm engine, no gRPC.
package launch

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	cshim "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
)

// Names of the runtime, its binaries, and the CRI annotations they read.
const (
	// RuntimeType is the containerd runtime type that selects the shim;
	// containerd runs it as BinaryName, found on its PATH.
	RuntimeType = "io.containerd.kindling.v1"
	// BinaryName is the start/delete binary's file name, derived from
	// RuntimeType by containerd's naming rule.
	BinaryName = "containerd-shim-kindling-v1"
	// ServerBinaryName is the shim server's file name; BinaryName starts
	// it from its own directory (or from $KINDLING_SHIM_SERVER).
	ServerBinaryName = "kindling-shim-server"
	// EnvServer overrides where the server binary is.
	EnvServer = "KINDLING_SHIM_SERVER"
	// AnnotationSandboxID names the pod sandbox a container belongs to;
	// a pod's containers share one server process, named by it.
	AnnotationSandboxID = "io.kubernetes.cri.sandbox-id"
)

// Run is the main of BinaryName: it parses containerd's flags and runs
// the action they ask for. It exits the process on failure.
func Run() {
	cshim.RunManager(context.Background(), Manager{}, Config)
}

// Config is the shim library configuration of both binaries: guests run
// in the server process itself, so there are no child processes to reap
// or to adopt.
func Config(c *cshim.Config) {
	c.NoReaper = true
	c.NoSubreaper = true
}

// Manager implements the "start" and "delete" actions of containerd's
// shim library (shim.Manager).
type Manager struct{}

var _ cshim.Manager = Manager{}

// Name implements shim.Manager.
func (Manager) Name() string { return RuntimeType }

// groupID is the shim process a container belongs to: its pod's sandbox
// ID for containers of a Kubernetes pod (the sandbox container names
// itself), else the container's own ID.
func groupID(id string, annotations map[string]string) string {
	if g := annotations[AnnotationSandboxID]; g != "" {
		return g
	}
	return id
}

// Start implements shim.Manager. containerd runs "start" in the
// container's bundle; it prints the address of the server serving the
// container. The first container of a pod starts a server process,
// listening on a socket named after the pod; later containers of the same
// pod find that socket in use and get the same address.
func (Manager) Start(ctx context.Context, id string, opts cshim.StartOpts) (_ string, retErr error) {
	annotations, err := readAnnotations("config.json")
	if err != nil {
		return "", err
	}
	address, err := cshim.SocketAddress(ctx, opts.Address, groupID(id, annotations))
	if err != nil {
		return "", fmt.Errorf("shim socket address: %w", err)
	}
	socket, err := cshim.NewSocket(address)
	if err != nil {
		if !cshim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
		if cshim.CanConnect(address) {
			// The pod's shim is running: it serves this container too.
			if err := cshim.WriteAddress("address", address); err != nil {
				return "", fmt.Errorf("write shim address: %w", err)
			}
			return address, nil
		}
		// A stale socket from a shim that died.
		if err := cshim.RemoveSocket(address); err != nil {
			return "", fmt.Errorf("remove stale shim socket: %w", err)
		}
		if socket, err = cshim.NewSocket(address); err != nil {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			_ = socket.Close()
			_ = cshim.RemoveSocket(address)
		}
	}()
	if err := cshim.WriteAddress("address", address); err != nil {
		return "", fmt.Errorf("write shim address: %w", err)
	}
	f, err := socket.File()
	if err != nil {
		return "", fmt.Errorf("shim socket: %w", err)
	}
	defer f.Close()
	cmd, err := serveCommand(ctx, id, opts)
	if err != nil {
		return "", err
	}
	cmd.ExtraFiles = []*os.File{f} // fd 3: the shim library serves on it
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start shim server %s: %w", cmd.Path, err)
	}
	defer func() {
		if retErr != nil {
			_ = cmd.Process.Kill()
		}
	}()
	go func() { _ = cmd.Wait() }()
	if err := cshim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		return "", fmt.Errorf("adjust shim OOM score: %w", err)
	}
	return address, nil
}

// ServerPath is the server binary BinaryName starts.
func ServerPath() (string, error) {
	if p := os.Getenv(EnvServer); p != "" {
		return p, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find shim binary: %w", err)
	}
	return filepath.Join(filepath.Dir(self), ServerBinaryName), nil
}

// serveCommand runs the server binary with containerd's flags, in the
// bundle: it serves the task API on the socket passed as fd 3.
func serveCommand(ctx context.Context, id string, opts cshim.StartOpts) (*exec.Cmd, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	server, err := ServerPath()
	if err != nil {
		return nil, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(server, args...)
	cmd.Dir = cwd
	cmd.Env = os.Environ()
	if os.Getenv("GOMAXPROCS") == "" {
		// The shim library caps GOMAXPROCS at 2 unless it is set; a pod's
		// containers run their guests in parallel, so use every CPU.
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(runtime.NumCPU()))
	}
	// Not in containerd's process group: signals meant for containerd
	// must not reach the pod.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, nil
}

// readAnnotations reads only the annotations of an OCI spec.
func readAnnotations(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read OCI spec: %w", err)
	}
	var s struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse OCI spec %s: %w", path, err)
	}
	return s.Annotations, nil
}

// Stop implements shim.Manager: the "delete" action, which containerd runs
// in a task's bundle when its shim is gone (crashed, killed) to clean up
// what the shim left: the task's mounted rootfs.
func (Manager) Stop(ctx context.Context, id string) (cshim.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return cshim.StopStatus{}, err
	}
	bundle := filepath.Join(filepath.Dir(cwd), id)
	if err := mount.UnmountAll(filepath.Join(bundle, "rootfs"), 0); err != nil {
		log.G(ctx).WithError(err).Warn("unmount rootfs of a dead shim's task")
	}
	return cshim.StopStatus{
		ExitedAt:   time.Now(),
		ExitStatus: 128 + int(syscall.SIGKILL),
	}, nil
}
