package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/sandbox/wasm"
	"github.com/kindling-dev/kindling/workloads"
)

func init() {
	Register(Sandbox{
		Name:  wasm.RuntimeName,
		Modes: []Mode{Cold, Cached, Warm, Snapshot},
		New: func(m Mode, env *Env) (Column, error) {
			return &wasmColumn{mode: m, env: env}, nil
		},
	})
}

// wasmColumn runs workloads in kindling's wasm sandbox (package
// sandbox/wasm), through the same Driver, Prepared and Instance calls the
// daemon makes.
type wasmColumn struct {
	mode Mode
	env  *Env
}

var wasmAbout = map[Mode]string{
	Cold:     "new driver, empty compilation cache: load + compile (cache=miss) + a fresh instance",
	Cached:   "new driver, module in the on-disk compilation cache (a restarted daemon): load + compile (cache=disk) + a fresh instance",
	Warm:     "module prepared once: a fresh instance per run (the steady state)",
	Snapshot: "reactor build, initialized and snapshotted once: every run starts from the snapshot (copy-on-write image; pooled instances reset to it)",
}

func (c *wasmColumn) Info() ColumnInfo {
	return ColumnInfo{
		Name:    wasm.RuntimeName + " " + string(c.mode),
		Sandbox: wasm.RuntimeName,
		Mode:    c.mode,
		Target:  c.target(),
		About:   wasmAbout[c.mode],
	}
}

func (c *wasmColumn) target() string {
	if c.mode == Snapshot {
		return workloads.TargetWasmReactor
	}
	return workloads.TargetWasm
}

// sharedCacheDir is the compilation cache the cached and warm columns share
// within one run.
func (c *wasmColumn) sharedCacheDir() string { return filepath.Join(c.env.Dir, "wasm-cache") }

func (c *wasmColumn) Prepare(ctx context.Context, w Workload) (Runner, error) {
	path, err := w.Artifact(c.target())
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	sum := sha256.Sum256(bin)
	spec := sandbox.Spec{
		Name:     w.Name,
		Artifact: "sha256:" + hex.EncodeToString(sum[:]),
		// Read the artifact from disk on every load, as the daemon reads
		// it from its store.
		Load:     func() ([]byte, error) { return os.ReadFile(path) },
		MemoryMB: c.env.MemoryMB,
	}
	switch c.mode {
	case Cold:
		return &wasmFreshRunner{spec: spec, scratch: c.env.Dir, want: wasm.CacheMiss}, nil
	case Cached, Warm, Snapshot:
		// Compile into the shared cache once, for both columns.
		err := c.env.Once("wasm-cache "+spec.Artifact, func() error {
			return withPrepared(ctx, c.sharedCacheDir(), spec, nil, func(sandbox.Prepared) error { return nil })
		})
		if err != nil {
			return nil, err
		}
		if c.mode == Cached {
			return &wasmFreshRunner{spec: spec, cacheDir: c.sharedCacheDir(), want: wasm.CacheDisk}, nil
		}
		if c.mode == Snapshot {
			if err := checkSnapshot(ctx, c.sharedCacheDir(), spec); err != nil {
				return nil, err
			}
		}
		return newWasmWarmRunner(ctx, c.sharedCacheDir(), spec)
	default:
		return nil, fmt.Errorf("unsupported mode %q", c.mode)
	}
}

// withPrepared creates a driver on cacheDir, prepares spec (recording into
// rec), calls fn and closes everything.
func withPrepared(ctx context.Context, cacheDir string, spec sandbox.Spec, rec *phase.Recorder, fn func(sandbox.Prepared) error) (err error) {
	d, err := wasm.New(ctx, wasm.WithCacheDir(cacheDir))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.Close(ctx)) }()
	p, err := d.Prepare(ctx, spec, rec)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer func() { err = errors.Join(err, p.Close(ctx)) }()
	return fn(p)
}

// invokeOnce starts an instance of p and invokes it with req.
func invokeOnce(ctx context.Context, p sandbox.Prepared, req *sandbox.Request) (err error) {
	inst, err := p.Start(ctx, req.Phases)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer func() { err = errors.Join(err, inst.Close(ctx)) }()
	if _, err := inst.Invoke(ctx, req); err != nil {
		return fmt.Errorf("invoke: %w", err)
	}
	return nil
}

// wasmFreshRunner runs each invocation in a new driver: on an empty cache
// directory of its own (cold), or on cacheDir (cached). Creating and
// closing the driver is not measured; it belongs to the daemon, not to the
// invocation.
type wasmFreshRunner struct {
	spec     sandbox.Spec
	cacheDir string // "" for a new, empty one per run under scratch
	scratch  string
	want     string // the compile phase's expected detail
}

func (r *wasmFreshRunner) Run(ctx context.Context, req *sandbox.Request) error {
	dir := r.cacheDir
	if dir == "" {
		d, err := os.MkdirTemp(r.scratch, "cold-")
		if err != nil {
			return fmt.Errorf("cache directory: %w", err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	return withPrepared(ctx, dir, r.spec, req.Phases, func(p sandbox.Prepared) error {
		if err := checkCompile(req.Phases, r.want); err != nil {
			return err
		}
		return invokeOnce(ctx, p, req)
	})
}

func (r *wasmFreshRunner) Close(context.Context) error { return nil }

// checkCompile makes sure the run measured the compile it claims to: a
// cold column that hit a cache would measure nothing.
func checkCompile(rec *phase.Recorder, want string) error {
	for _, t := range rec.Timings() {
		if t.Name == phase.Compile {
			if t.Detail != want {
				return fmt.Errorf("compile was %s, want %s", t.Detail, want)
			}
			return nil
		}
	}
	return errors.New("no compile phase recorded")
}

// wasmWarmRunner holds a prepared module and starts a fresh instance of it
// per run.
type wasmWarmRunner struct {
	d *wasm.Driver
	p sandbox.Prepared
}

func newWasmWarmRunner(ctx context.Context, cacheDir string, spec sandbox.Spec) (*wasmWarmRunner, error) {
	d, err := wasm.New(ctx, wasm.WithCacheDir(cacheDir))
	if err != nil {
		return nil, err
	}
	p, err := d.Prepare(ctx, spec, nil)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("prepare: %w", err), d.Close(ctx))
	}
	return &wasmWarmRunner{d: d, p: p}, nil
}

func (r *wasmWarmRunner) Run(ctx context.Context, req *sandbox.Request) error {
	return invokeOnce(ctx, r.p, req)
}

func (r *wasmWarmRunner) Close(ctx context.Context) error {
	return errors.Join(r.p.Close(ctx), r.d.Close(ctx))
}

// checkSnapshot makes sure a snapshot column measures snapshots: a module
// that falls back to the command path would measure the warm column again.
func checkSnapshot(ctx context.Context, cacheDir string, spec sandbox.Spec) error {
	return withPrepared(ctx, cacheDir, spec, nil, func(p sandbox.Prepared) error {
		if sm, ok := p.(sandbox.StartModer); ok {
			if mode, reason := sm.StartMode(); mode != wasm.ModeSnapshot {
				return fmt.Errorf("not snapshotted (%s): %s", mode, reason)
			}
		}
		return nil
	})
}
