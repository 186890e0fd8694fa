// Package shim is the server of the containerd runtime
// io.containerd.kindling.v1: it runs kindling's wasm functions as
// containers, so containerd (ctr, nerdctl) and Kubernetes (a RuntimeClass
// whose handler is "kindling") schedule them like any other workload.
//
// It is built on containerd's own shim library (runtime/v2/shim): the shim
// v2 task API over ttrpc and events forwarded to containerd. containerd
// runs containerd-shim-kindling-v1 (package launch) for a task's "start"
// and "delete" actions; "start" runs this server, kindling-shim-server,
// once per pod.
//
// A container is a task whose entrypoint (args[0] of its OCI spec) is a
// .wasm file in the container's root filesystem, which the server mounts
// from the mounts containerd passes, or the wasm layer of its image. It
// runs in-process in the same wasm sandbox as the kindling daemon (one
// engine path), with its args and env from the spec, the rootfs and the
// spec's directory bind mounts as WASI preopens, its memory limit from
// linux.resources.memory.limit, and its stdio on containerd's FIFOs.
// Compiled modules are cached on the node (CacheDir), so a function's
// second pod does not recompile it.
//
// One server process serves a whole pod: containers are grouped by their
// io.kubernetes.cri.sandbox-id annotation. The pod's sandbox (pause)
// container is a task that runs nothing and lasts until it is killed.
// docs/kubernetes.md has the task API support table and installation.
package shim

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	cshim "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	"github.com/kindling-dev/kindling/shim/launch"
)

// Names of the runtime and its binaries (see package launch).
const (
	RuntimeType      = launch.RuntimeType
	BinaryName       = launch.BinaryName
	ServerBinaryName = launch.ServerBinaryName
)

// Serve is the main of the server binary (ServerBinaryName): it parses
// containerd's flags and serves the task API on the socket the start
// action passed it. It exits the process on failure.
func Serve() {
	plugin.Register(&plugin.Registration{
		Type:     plugin.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugin.EventPlugin, plugin.InternalPlugin},
		InitFn:   initTaskService,
	})
	cshim.RunManager(context.Background(), launch.Manager{}, launch.Config)
}

// initTaskService builds the task service from the shim library's event
// publisher and shutdown service.
func initTaskService(ic *plugin.InitContext) (interface{}, error) {
	p, err := ic.Get(plugin.EventPlugin)
	if err != nil {
		return nil, fmt.Errorf("event publisher: %w", err)
	}
	pub, ok := p.(events.Publisher)
	if !ok {
		return nil, fmt.Errorf("event plugin is a %T, not a publisher", p)
	}
	sdp, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
	if err != nil {
		return nil, fmt.Errorf("shutdown service: %w", err)
	}
	sd, ok := sdp.(shutdown.Service)
	if !ok {
		return nil, fmt.Errorf("shutdown plugin is a %T", sdp)
	}
	// The socket this process serves on; removed on exit even if the
	// bundle holding the address file is already gone.
	address, _ := cshim.ReadAddress("address")
	ns, err := namespaces.NamespaceRequired(ic.Context)
	if err != nil {
		return nil, err
	}
	svc := newService(ic.Context, pub, CacheDir(), newContentStore(ic.Address, ns), sd.Shutdown)
	sd.RegisterCallback(func(ctx context.Context) error {
		svc.close(ctx)
		if c, ok := pub.(interface{ Close() error }); ok {
			_ = c.Close()
		}
		if address != "" {
			if err := cshim.RemoveSocket(address); err != nil {
				log.G(ctx).WithError(err).Debug("remove shim socket")
			}
		}
		return nil
	})
	return ttrpcService{svc}, nil
}

// ttrpcService registers the task service with the shim's ttrpc server.
type ttrpcService struct{ svc taskAPI.TaskService }

func (t ttrpcService) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, t.svc)
	return nil
}
