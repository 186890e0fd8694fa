package shim

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/containerd/log"

	"github.com/kindling-dev/kindling/sandbox/wasm"
)

// Configuration from the environment the shim inherits from containerd.
const (
	// EnvCacheDir overrides DefaultCacheDir.
	EnvCacheDir = "KINDLING_SHIM_CACHE_DIR"
	// DefaultCacheDir holds compiled modules on the node, shared by every
	// shim process: the second pod of a function does not recompile.
	DefaultCacheDir = "/var/lib/kindling/shim-cache"
)

// CacheDir is the compilation cache directory the shim uses.
func CacheDir() string {
	if d := os.Getenv(EnvCacheDir); d != "" {
		return d
	}
	return DefaultCacheDir
}

// engine is the shim process's one wasm sandbox driver, shared by every
// container of the pod. It starts warming up when the shim starts (while
// containerd is still setting up the pod's sandbox), so the first
// container finds it ready.
type engine struct {
	ready chan struct{}
	drv   *wasm.Driver
	err   error

	closeOnce sync.Once
}

func startEngine(ctx context.Context, cacheDir string) *engine {
	e := &engine{ready: make(chan struct{})}
	go func() {
		defer close(e.ready)
		var opts []wasm.Option
		if cacheDir != "" {
			if err := os.MkdirAll(cacheDir, 0o755); err != nil {
				log.G(ctx).WithError(err).Warnf("compilation cache %s unusable; compiling in memory only", cacheDir)
			} else {
				opts = append(opts, wasm.WithCacheDir(cacheDir))
			}
		}
		e.drv, e.err = wasm.New(context.WithoutCancel(ctx), opts...)
		if e.err != nil {
			e.err = fmt.Errorf("start wasm engine: %w", e.err)
		}
	}()
	return e
}

// driver waits for the engine to be ready.
func (e *engine) driver(ctx context.Context) (*wasm.Driver, error) {
	select {
	case <-e.ready:
		return e.drv, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (e *engine) close(ctx context.Context) {
	e.closeOnce.Do(func() {
		<-e.ready
		if e.drv != nil {
			if err := e.drv.Close(ctx); err != nil {
				log.G(ctx).WithError(err).Warn("close wasm engine")
			}
		}
	})
}
