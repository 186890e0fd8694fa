// Package daemon assembles a kindling daemon from its parts — store,
// sandbox drivers, function service, HTTP API — and runs it.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/function"
	"github.com/kindling-dev/kindling/image"
	"github.com/kindling-dev/kindling/logs"
	"github.com/kindling-dev/kindling/manifest"
	"github.com/kindling-dev/kindling/metrics"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/sandbox/microvm"
	"github.com/kindling-dev/kindling/sandbox/oci"
	"github.com/kindling-dev/kindling/sandbox/wasm"
	"github.com/kindling-dev/kindling/scheduler"
	"github.com/kindling-dev/kindling/server"
	"github.com/kindling-dev/kindling/store"
	"github.com/kindling-dev/kindling/tracing"
)

// Config configures a daemon.
type Config struct {
	DataDir      string
	Logger       *slog.Logger
	MaxBodyBytes int64
	// MemoryBudgetMB is the memory all instances share (0: DefaultMemoryBudgetMB()).
	MemoryBudgetMB int
	// KeepAlive is the default keep-alive policy ("fixed", "fixed:5m",
	// "none", "hybrid"); empty means fixed 10 minutes.
	KeepAlive string
	// Tracing selects the trace exporter.
	Tracing tracing.Config
	// OCIRuntime is the OCI runtime of the oci sandbox: "runc" (default),
	// "crun", or "none" to leave the oci sandbox out. When the runtime or
	// the privileges it needs are missing, the daemon runs without it.
	OCIRuntime string
	// AgentPath is the static kindling-agent the oci and microvm sandboxes
	// run in containers and guests (default: next to the executable, else
	// on PATH).
	AgentPath string
	// MicroVM enables the microvm sandbox (QEMU; software emulation where
	// KVM is not usable, so templates take seconds to boot at deploy).
	MicroVM bool
}

// DefaultMemoryBudgetMB is half of the host's memory (4096 if unknown).
func DefaultMemoryBudgetMB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil && kb > 0 {
			return kb / 1024 / 2
		}
	}
	return 4096
}

// Daemon is an assembled kindling daemon.
type Daemon struct {
	Store     *store.Store
	Functions *function.Service
	Server    *server.Server
	Metrics   *metrics.Metrics
	Scheduler *scheduler.Scheduler
	Tracer    *tracing.Tracer
	logs      *logs.Dir
	drivers   []sandbox.Driver
	images    *oci.Driver // nil when the oci sandbox is not available
	log       *slog.Logger
}

// New opens the data directory and builds the daemon.
func New(ctx context.Context, cfg Config) (*Daemon, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := store.Open(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	wd, err := wasm.New(ctx, wasm.WithCacheDir(st.CacheDir(wasm.RuntimeName)))
	if err != nil {
		st.Close()
		return nil, err
	}
	d := &Daemon{Store: st, Metrics: metrics.New(), logs: logs.New(st.LogDir(), 0), drivers: []sandbox.Driver{wd}, log: log}
	if cfg.OCIRuntime != "none" {
		od, err := oci.New(ctx, oci.Config{Root: filepath.Join(cfg.DataDir, "oci"), Runtime: cfg.OCIRuntime, AgentPath: cfg.AgentPath})
		if err != nil {
			// Not available is not failed: the daemon serves wasm without it.
			log.Info("oci sandbox not available", "reason", err)
		} else {
			d.drivers = append(d.drivers, od)
			d.images = od
		}
	}
	var vms server.MicroVMs // nil: no microvm sandbox
	if cfg.MicroVM {
		md, err := microvm.New(ctx, microvm.Config{Root: filepath.Join(cfg.DataDir, "microvm"), Agent: cfg.AgentPath, Logger: log})
		if err != nil {
			log.Info("microvm sandbox not available", "reason", err)
		} else {
			d.drivers = append(d.drivers, md)
			vms = md.Manager()
		}
	}
	var policy scheduler.Policy
	if cfg.KeepAlive != "" {
		if policy, err = scheduler.ParsePolicy(cfg.KeepAlive); err != nil {
			d.Close(ctx)
			return nil, fmt.Errorf("keep-alive policy: %w", err)
		}
	}
	if cfg.MemoryBudgetMB == 0 {
		cfg.MemoryBudgetMB = DefaultMemoryBudgetMB()
	}
	d.Scheduler = scheduler.New(scheduler.Options{MemoryBudgetMB: cfg.MemoryBudgetMB, DefaultPolicy: policy, Logger: log})
	if d.Tracer, err = tracing.New(ctx, cfg.Tracing); err != nil {
		d.Close(ctx)
		return nil, err
	}
	d.Functions, err = function.New(function.Config{Store: st, Drivers: d.drivers, Logs: d.logs, Metrics: d.Metrics,
		Logger: log, Scheduler: d.Scheduler, Tracer: d.Tracer})
	if err != nil {
		d.Close(ctx)
		return nil, err
	}
	d.Metrics.WatchPools(d.Functions.PoolStats)
	if n, err := d.Functions.ResumeJobs(); err != nil {
		d.Close(ctx)
		return nil, err
	} else if n > 0 {
		log.Info("resuming accepted asynchronous invocations", "count", n)
	}
	srvCfg := server.Config{Functions: d.Functions, Logs: d.logs, Metrics: d.Metrics, Tracer: d.Tracer,
		Logger: log, MaxBodyBytes: cfg.MaxBodyBytes, MicroVMs: vms}
	if d.images != nil {
		srvCfg.Images = imageImporter{d.images.Images()}
	}
	d.Server = server.New(srvCfg)
	log.Info("data directory opened", "dir", cfg.DataDir, "functions", len(d.Functions.List()),
		"memoryBudgetMB", cfg.MemoryBudgetMB, "keepAlive", cfg.KeepAlive, "traces", cfg.Tracing.Exporter)
	return d, nil
}

// Close releases everything; call it after the HTTP server has stopped.
func (d *Daemon) Close(ctx context.Context) error {
	var errs []error
	if d.Functions != nil {
		errs = append(errs, d.Functions.Close(ctx))
	}
	if d.Scheduler != nil {
		errs = append(errs, d.Scheduler.Close(ctx))
	}
	if d.Tracer != nil {
		errs = append(errs, d.Tracer.Shutdown(ctx))
	}
	for _, drv := range d.drivers {
		errs = append(errs, drv.Close(ctx))
	}
	errs = append(errs, d.logs.Close(), d.Store.Close())
	return errors.Join(errs...)
}

// imageImporter adapts the oci sandbox's image store to the server.
type imageImporter struct{ store *image.Store }

func (i imageImporter) ImportFile(ctx context.Context, path string, names ...string) (api.ImageRef, error) {
	img, err := i.store.ImportFile(ctx, path, names...)
	if err != nil {
		return api.ImageRef{}, err
	}
	return api.ImageRef{ID: img.ID, Names: i.store.Names(img.ID)}, nil
}

// DeployManifest deploys every function of a manifest file, in process.
func (d *Daemon) DeployManifest(ctx context.Context, path string) error {
	m, err := manifest.Load(path)
	if err != nil {
		return err
	}
	for _, f := range m.Functions {
		bin, err := os.ReadFile(m.ArtifactPath(f))
		if err != nil {
			return fmt.Errorf("function %q: %w", f.Name, err)
		}
		ref, err := d.Store.PutArtifactBytes(bin)
		if err != nil {
			return fmt.Errorf("function %q: %w", f.Name, err)
		}
		if _, err := d.Functions.Deploy(ctx, f.Name, f.Spec(ref.Digest)); err != nil {
			return fmt.Errorf("function %q: %w", f.Name, err)
		}
	}
	return nil
}

// Serve serves the API on ln until ctx is done, then drains in-flight
// requests (up to drain) and returns.
func (d *Daemon) Serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	hs := &http.Server{Handler: d.Server, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	d.log.Info("serving", "addr", "http://"+ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	d.Server.SetReady(false)
	d.log.Info("shutting down", "drain", drain)
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
