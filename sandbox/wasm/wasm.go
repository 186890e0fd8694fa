// Package wasm is kindling's in-process WebAssembly sandbox, built on wazero.
//
// It runs WASI preview1 command modules. A module is compiled once per
// artifact (through an on-disk compilation cache shared by every runtime of
// the host), and every invocation gets a fresh, isolated instance: its own
// linear memory (capped at the function's memory setting), its own stdio,
// environment and arguments. Nothing of one invocation is visible to the next.
// A deadline on the invocation's context stops the guest, even in an
// infinite loop.
package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
)

// RuntimeName is the name functions use to select this sandbox.
const RuntimeName = "wasm"

// Compile cache outcomes, reported as the Detail of phase.Compile.
const (
	CacheMemory = "cache=memory" // compiled module already loaded in this process
	CacheDisk   = "cache=disk"   // loaded from the on-disk compilation cache
	CacheMiss   = "cache=miss"   // compiled from scratch
)

// Option configures a Driver.
type Option func(*Driver)

// WithCacheDir keeps compiled modules in dir, so a restarted daemon does not
// recompile. Without it, compiled modules live in memory only.
func WithCacheDir(dir string) Option { return func(d *Driver) { d.cacheDir = dir } }

// Driver is the wasm sandbox. It is safe for concurrent use.
type Driver struct {
	cacheDir string
	cache    wazero.CompilationCache
	rt       wazero.Runtime

	mu       sync.Mutex
	compiled map[string]*compiledEntry // by artifact digest
}

type compiledEntry struct {
	refs   int
	module wazero.CompiledModule
	ready  chan struct{} // closed when module or err is set
	err    error
}

var _ sandbox.Driver = (*Driver)(nil)

// New creates a wasm driver with one wazero runtime for all functions.
func New(ctx context.Context, opts ...Option) (*Driver, error) {
	d := &Driver{compiled: map[string]*compiledEntry{}}
	for _, o := range opts {
		o(d)
	}
	cfg := wazero.NewRuntimeConfig().WithCloseOnContextDone(true)
	if d.cacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(d.cacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm: open compilation cache %s: %w", d.cacheDir, err)
		}
		d.cache = c
		cfg = cfg.WithCompilationCache(c)
		if err := os.MkdirAll(d.markerDir(), 0o755); err != nil {
			return nil, fmt.Errorf("wasm: create cache markers: %w", err)
		}
	}
	d.rt = wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, d.rt); err != nil {
		return nil, fmt.Errorf("wasm: instantiate WASI: %w", err)
	}
	return d, nil
}

// Name implements sandbox.Driver.
func (d *Driver) Name() string { return RuntimeName }

// Capabilities implements sandbox.Driver.
func (d *Driver) Capabilities() sandbox.Capabilities {
	return sandbox.Capabilities{SingleUse: true, MemoryLimit: true}
}

// Close implements sandbox.Driver.
func (d *Driver) Close(ctx context.Context) error {
	err := d.rt.Close(ctx)
	if d.cache != nil {
		err = errors.Join(err, d.cache.Close(ctx))
	}
	return err
}

// markerDir holds one empty file per artifact digest compiled into the
// on-disk cache by this engine version; its presence tells a cache hit.
func (d *Driver) markerDir() string {
	return filepath.Join(d.cacheDir, "kindling-compiled", engineVersion())
}

// Prepare implements sandbox.Driver: it compiles the artifact, at most once
// per digest however many functions or callers share it.
func (d *Driver) Prepare(ctx context.Context, spec sandbox.Spec, rec *phase.Recorder) (sandbox.Prepared, error) {
	if spec.MemoryMB <= 0 {
		return nil, fmt.Errorf("wasm: memoryMB must be positive: %w", errdefs.ErrInvalidArgument)
	}
	d.mu.Lock()
	e, ok := d.compiled[spec.Artifact]
	if ok {
		e.refs++
		d.mu.Unlock()
		start := time.Now()
		<-e.ready
		rec.Since(phase.Compile, start, CacheMemory)
		if e.err != nil {
			d.release(spec.Artifact, e)
			return nil, e.err
		}
	} else {
		e = &compiledEntry{refs: 1, ready: make(chan struct{})}
		d.compiled[spec.Artifact] = e
		d.mu.Unlock()
		e.module, e.err = d.compile(ctx, spec, rec)
		close(e.ready)
		if e.err != nil {
			d.mu.Lock()
			delete(d.compiled, spec.Artifact)
			d.mu.Unlock()
			return nil, e.err
		}
	}
	if err := checkModule(e.module, spec.MemoryMB); err != nil {
		d.release(spec.Artifact, e)
		return nil, err
	}
	p := &prepared{d: d, digest: spec.Artifact, entry: e, spec: spec}
	p.baseConfig = wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions().
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithRandSource(rand.Reader).
		WithArgs(append([]string{spec.Name}, spec.Args...)...)
	for _, kv := range spec.Env {
		p.baseConfig = withEnvPair(p.baseConfig, kv)
	}
	return p, nil
}

func (d *Driver) compile(ctx context.Context, spec sandbox.Spec, rec *phase.Recorder) (wazero.CompiledModule, error) {
	start := time.Now()
	if spec.Load == nil {
		return nil, fmt.Errorf("wasm: function %q has no artifact loader: %w", spec.Name, errdefs.ErrInvalidArgument)
	}
	bin, err := spec.Load()
	if err != nil {
		return nil, fmt.Errorf("wasm: load artifact %s: %w", spec.Artifact, err)
	}
	start = rec.Since(phase.ArtifactLoad, start, "")
	detail := CacheMiss
	var marker string
	if d.cacheDir != "" {
		marker = filepath.Join(d.markerDir(), strings.TrimPrefix(spec.Artifact, "sha256:"))
		if _, err := os.Stat(marker); err == nil {
			detail = CacheDisk
		}
	}
	mod, err := d.rt.CompileModule(ctx, bin)
	if err != nil {
		return nil, fmt.Errorf("not a valid WebAssembly module: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	rec.Since(phase.Compile, start, detail)
	if marker != "" && detail == CacheMiss {
		// Best effort: a missing marker only mislabels the next hit as a miss.
		_ = os.WriteFile(marker, nil, 0o644)
	}
	return mod, nil
}

// checkModule rejects modules kindling cannot run as commands.
func checkModule(m wazero.CompiledModule, memoryMB int) error {
	if _, ok := m.ExportedFunctions()["_start"]; !ok {
		return fmt.Errorf("module exports no _start function (not a WASI command module): %w", errdefs.ErrInvalidArgument)
	}
	limit := uint64(memoryMB) << 20
	for _, mem := range m.ExportedMemories() {
		if min := uint64(mem.Min()) * pageSize; min > limit {
			return fmt.Errorf("module needs %d MiB of memory at start, more than its memory limit of %d MiB: %w",
				min>>20, memoryMB, errdefs.ErrInvalidArgument)
		}
	}
	if len(m.ImportedMemories()) > 0 {
		return fmt.Errorf("module imports its memory; only modules that define their own memory are supported: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

func (d *Driver) release(digest string, e *compiledEntry) {
	d.mu.Lock()
	e.refs--
	last := e.refs == 0
	if last && d.compiled[digest] == e {
		delete(d.compiled, digest)
	}
	d.mu.Unlock()
	if last && e.module != nil {
		_ = e.module.Close(context.Background())
	}
}

const pageSize = 65536

type prepared struct {
	d          *Driver
	digest     string
	entry      *compiledEntry
	spec       sandbox.Spec
	baseConfig wazero.ModuleConfig
	closeOnce  sync.Once
}

// Start implements sandbox.Prepared. Wasm instances are created fresh
// inside Invoke, so Start only binds the prepared module.
func (p *prepared) Start(ctx context.Context, rec *phase.Recorder) (sandbox.Instance, error) {
	return &instance{p: p}, nil
}

// Close implements sandbox.Prepared.
func (p *prepared) Close(ctx context.Context) error {
	p.closeOnce.Do(func() { p.d.release(p.digest, p.entry) })
	return nil
}

type instance struct {
	p    *prepared
	used bool
}

// Close implements sandbox.Instance.
func (i *instance) Close(ctx context.Context) error { return nil }

// Invoke implements sandbox.Instance: instantiate a fresh module, run
// _start, tear the instance down.
func (i *instance) Invoke(ctx context.Context, req *sandbox.Request) (sandbox.Result, error) {
	if i.used {
		return sandbox.Result{}, fmt.Errorf("wasm: instance already used (single-use): %w", errdefs.ErrFailedPrecondition)
	}
	i.used = true
	p := i.p
	rec := req.Phases
	begin := time.Now()

	mark := &firstTouch{}
	cfg := p.baseConfig.
		WithStdin(&markReader{r: req.Stdin, mark: mark}).
		WithStdout(&markWriter{w: req.Stdout, mark: mark}).
		WithStderr(nonNil(req.Stderr))
	for _, kv := range req.Env {
		cfg = withEnvPair(cfg, kv)
	}

	mem := &memoryLimit{limit: uint64(p.spec.MemoryMB) << 20}
	ictx := experimental.WithMemoryAllocator(ctx, mem)
	mod, err := p.d.rt.InstantiateModule(ictx, p.entry.module, cfg)
	t := rec.Since(phase.Instantiate, begin, "")
	if err != nil {
		mem.free()
		return sandbox.Result{}, classify(ctx, err, mem, "instantiate")
	}
	mark.start = t
	_, err = mod.ExportedFunction("_start").Call(ctx)
	end := time.Now()
	if mark.at.IsZero() {
		mark.at = end
	}
	rec.Add(phase.Startup, mark.at.Sub(t), "")
	rec.Add(phase.Run, end.Sub(mark.at), "")

	res := sandbox.Result{MemoryBytes: memSize(mod)}
	_ = mod.Close(context.Background())
	mem.free()
	res.Duration = rec.Since(phase.Teardown, end, "").Sub(begin)
	if err != nil {
		var exit *sys.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == 0 {
			return res, nil
		}
		ferr := classify(ctx, err, mem, "run")
		if fe, ok := errdefs.AsFunctionError(ferr); ok {
			res.ExitCode = fe.ExitCode
		}
		return res, ferr
	}
	return res, nil
}

func memSize(mod api.Module) uint64 {
	if m := mod.Memory(); m != nil {
		return uint64(m.Size())
	}
	return 0
}

// classify turns a wazero error into kindling's vocabulary.
func classify(ctx context.Context, err error, mem *memoryLimit, stage string) error {
	var exit *sys.ExitError
	isExit := errors.As(err, &exit)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (isExit && exit.ExitCode() == sys.ExitCodeDeadlineExceeded):
		return &errdefs.FunctionError{Kind: errdefs.KindTimeout, Message: "deadline exceeded; guest stopped", Err: context.DeadlineExceeded}
	case errors.Is(err, context.Canceled) || (isExit && exit.ExitCode() == sys.ExitCodeContextCanceled):
		return fmt.Errorf("invocation canceled: %w", context.Canceled)
	case mem.exceeded:
		fe := &errdefs.FunctionError{Kind: errdefs.KindOOM, Message: fmt.Sprintf("memory limit of %d MiB exceeded", mem.limit>>20), Err: err}
		if isExit {
			fe.ExitCode = int(exit.ExitCode())
		}
		return fe
	case isExit:
		return &errdefs.FunctionError{Kind: errdefs.KindExit, ExitCode: int(exit.ExitCode())}
	default:
		msg := err.Error()
		if i := strings.Index(msg, "\nwasm stack trace:"); i >= 0 {
			msg = strings.TrimSpace(msg[:i]) + " (" + strings.TrimSpace(strings.ReplaceAll(msg[i+1:], "\n", " ")) + ")"
		}
		return &errdefs.FunctionError{Kind: errdefs.KindTrap, Message: fmt.Sprintf("%s: %s", stage, msg), Err: err}
	}
}

func withEnvPair(cfg wazero.ModuleConfig, kv string) wazero.ModuleConfig {
	k, v, _ := strings.Cut(kv, "=")
	if k == "" {
		return cfg
	}
	return cfg.WithEnv(k, v)
}

// engineVersion identifies the compiler that produced cached code.
func engineVersion() string { return "wazero-" + wazeroVersion }
