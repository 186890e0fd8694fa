package containerdtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CRI is a client of containerd's CRI plugin, used as a kubelet would.
type CRI struct {
	Runtime cri.RuntimeServiceClient
	Images  cri.ImageServiceClient
	conn    *grpc.ClientConn
}

// CRI connects to the daemon's CRI service.
func (d *Daemon) CRI() (*CRI, error) {
	conn, err := grpc.NewClient("unix://"+d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to CRI: %w", err)
	}
	return &CRI{Runtime: cri.NewRuntimeServiceClient(conn), Images: cri.NewImageServiceClient(conn), conn: conn}, nil
}

// Close closes the connection.
func (c *CRI) Close() error { return c.conn.Close() }

// PodConfig is a host-network pod (no CNI needed) whose containers log
// under logDir. It sets no hostname: a host-network pod has the node's.
func PodConfig(name, uid, logDir string) *cri.PodSandboxConfig {
	return &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Uid: uid, Namespace: "default", Attempt: 0},
		LogDirectory: logDir,
		Linux: &cri.LinuxPodSandboxConfig{
			SecurityContext: &cri.LinuxSandboxSecurityContext{
				NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE},
			},
		},
	}
}

// ContainerConfig is a container of image logging to logPath (relative to
// the pod's log directory), with args after the image's entrypoint.
func ContainerConfig(name, image, logPath string, args ...string) *cri.ContainerConfig {
	return &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: name},
		Image:    &cri.ImageSpec{Image: image},
		Args:     args,
		LogPath:  logPath,
		Linux:    &cri.LinuxContainerConfig{},
	}
}

// WaitLog waits until the CRI log file at path holds output containing
// want, and returns the log's messages (the CRI log format's "time stream
// tag " prefix removed). The CRI plugin signals nothing when it writes a
// log line, so WaitLog reads the file every 200 µs: the granularity of
// the benchmark's "first output" step. (Waiting on inotify was measured
// to wake later than this, by up to 20 ms on a loaded 2-core machine.)
func WaitLog(ctx context.Context, path, want string) (string, error) {
	tick := time.NewTicker(200 * time.Microsecond)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if msgs := LogMessages(string(b)); strings.Contains(msgs, want) {
				return msgs, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q in %s: %w (log: %q)", want, filepath.Base(path), ctx.Err(), string(b))
		case <-tick.C:
		}
	}
}

// LogMessages strips the CRI log prefix ("2024-01-01T00:00:00Z stdout F ")
// from every line of a container log.
func LogMessages(log string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(log, "\n") {
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, " ", 4)
		if len(parts) == 4 {
			b.WriteString(parts[3])
		}
	}
	return b.String()
}

// WaitExited waits until the container has exited and returns its status.
func (c *CRI) WaitExited(ctx context.Context, id string) (*cri.ContainerStatus, error) {
	for {
		st, err := c.Runtime.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return nil, fmt.Errorf("container status %s: %w", id, err)
		}
		if st.Status.State == cri.ContainerState_CONTAINER_EXITED {
			return st.Status, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for container %s to exit: %w", id, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}
