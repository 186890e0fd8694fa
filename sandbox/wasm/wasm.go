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
	"github.com/tetratelabs/wazero/sys"

	kapi "github.com/kindling-dev/kindling/api"
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

// WithMemoryAccounting makes every invocation report the memory its
// instance actually made private (sandbox.Result.TouchedBytes). It costs a
// scan of /proc/self/pagemap per invocation; benchmarks use it. (A
// snapshot instance reset for reuse is scanned anyway and always reports
// it.)
func WithMemoryAccounting() Option { return func(d *Driver) { d.accounting = true } }

// WithCacheDir keeps compiled modules in dir, so a restarted daemon does not
// recompile. Without it, compiled modules live in memory only.
func WithCacheDir(dir string) Option { return func(d *Driver) { d.cacheDir = dir } }

// Driver is the wasm sandbox. It is safe for concurrent use.
type Driver struct {
	cacheDir string
	cache    wazero.CompilationCache
	rt       wazero.Runtime // instrumented modules (see program)
	rtClose  wazero.Runtime // the others: WithCloseOnContextDone

	accounting bool
	snapDir    string // where snapshots live (in cacheDir, or a temp dir)
	tempSnap   bool   // snapDir is ours to remove

	mu       sync.Mutex
	compiled map[string]*compiledEntry // by artifact digest or snapshot key

	spares spares // command instances' memory reservations, reused
}

// compiledEntry is a value built once and shared: a compiled module or a
// snapshot.
type compiledEntry struct {
	refs  int
	value any
	ready chan struct{} // closed when value or err is set
	err   error
}

var _ sandbox.Driver = (*Driver)(nil)

// New creates a wasm driver: one wazero runtime for every function whose
// module takes kindling's interrupt check, and one, closing modules when
// their context ends, for the few others (see program).
func New(ctx context.Context, opts ...Option) (*Driver, error) {
	d := &Driver{compiled: map[string]*compiledEntry{}}
	for _, o := range opts {
		o(d)
	}
	cfg := wazero.NewRuntimeConfig()
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
		d.snapDir = filepath.Join(d.cacheDir, "snapshots")
	} else {
		dir, err := os.MkdirTemp("", "kindling-snapshots-*")
		if err != nil {
			return nil, fmt.Errorf("wasm: snapshot dir: %w", err)
		}
		d.snapDir, d.tempSnap = dir, true
	}
	d.rt = wazero.NewRuntimeWithConfig(ctx, cfg)
	d.rtClose = wazero.NewRuntimeWithConfig(ctx, cfg.WithCloseOnContextDone(true))
	for _, rt := range []wazero.Runtime{d.rt, d.rtClose} {
		if err := instantiateWASI(ctx, rt); err != nil {
			d.Close(ctx)
			return nil, fmt.Errorf("wasm: instantiate WASI: %w", err)
		}
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
	err := errors.Join(d.rt.Close(ctx), d.rtClose.Close(ctx))
	d.spares.close()
	if d.cache != nil {
		err = errors.Join(err, d.cache.Close(ctx))
	}
	if d.tempSnap {
		err = errors.Join(err, os.RemoveAll(d.snapDir))
	}
	return err
}

// markerDir holds one empty file per artifact digest compiled into the
// on-disk cache by this engine version; its presence tells a cache hit.
func (d *Driver) markerDir() string {
	return filepath.Join(d.cacheDir, "kindling-compiled", engineVersion())
}

// Start modes, reported by Prepared.StartMode.
const (
	ModeCommand  = kapi.StartCommand  // a fresh instance runs _start per invocation
	ModeSnapshot = kapi.StartSnapshot // every instance starts from an initialized snapshot
)

// Exports that make a module snapshot-friendly (a reactor built with the SDK).
const (
	exportInitialize = "_initialize"
	exportHandle     = "kindling_handle"
	exportStart      = "_start"
)

// Prepare implements sandbox.Driver. A reactor module exporting
// _initialize and kindling_handle is initialized once and snapshotted;
// every instance then starts from the snapshot. A command module (_start)
// runs from scratch per invocation.
func (d *Driver) Prepare(ctx context.Context, spec sandbox.Spec, rec *phase.Recorder) (sandbox.Prepared, error) {
	if spec.MemoryMB <= 0 {
		return nil, fmt.Errorf("wasm: memoryMB must be positive: %w", errdefs.ErrInvalidArgument)
	}
	if spec.Load == nil {
		return nil, fmt.Errorf("wasm: function %q has no artifact loader: %w", spec.Name, errdefs.ErrInvalidArgument)
	}
	env, err := newEnviron(spec.Env)
	if err != nil {
		return nil, fmt.Errorf("wasm: function %q: %w", spec.Name, err)
	}
	p := &prepared{d: d, spec: spec, env: env}
	if snap, reason, err := d.prepareSnapshot(ctx, spec, rec); err != nil {
		return nil, err
	} else if snap != nil {
		p.mode, p.snap = ModeSnapshot, snap
		p.release = func() { d.release(snap.key) }
		p.pool = make(chan *reactor, poolSize)
	} else {
		e, err := d.shared(spec.Artifact, func() (any, error) { return d.compileArtifact(ctx, spec, rec) }, rec)
		if err != nil {
			return nil, err
		}
		p.mode, p.reason, p.module = ModeCommand, reason, e.(*program)
		p.release = func() { d.release(spec.Artifact) }
		if err := checkCommand(p.module, spec.MemoryMB); err != nil {
			p.Close(ctx)
			return nil, err
		}
	}
	p.baseConfig = wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions().
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithRandSource(rand.Reader).
		WithArgs(append([]string{spec.Name}, spec.Args...)...)
	if len(spec.Mounts) > 0 {
		p.baseConfig = p.baseConfig.WithFSConfig(fsConfig(spec.Mounts))
	}
	return p, nil
}

// shared returns the value built once for key, however many callers ask
// concurrently, and takes a reference on it (see release). A caller that
// finds it already built records phase.Compile with CacheMemory.
func (d *Driver) shared(key string, build func() (any, error), rec *phase.Recorder) (any, error) {
	d.mu.Lock()
	e, ok := d.compiled[key]
	if ok {
		e.refs++
		d.mu.Unlock()
		start := time.Now()
		<-e.ready
		if e.err != nil {
			d.release(key)
			return nil, e.err
		}
		rec.Since(phase.Compile, start, CacheMemory)
		return e.value, nil
	}
	e = &compiledEntry{refs: 1, ready: make(chan struct{})}
	d.compiled[key] = e
	d.mu.Unlock()
	e.value, e.err = build()
	close(e.ready)
	if e.err != nil {
		d.mu.Lock()
		if d.compiled[key] == e {
			delete(d.compiled, key)
		}
		d.mu.Unlock()
		return nil, e.err
	}
	return e.value, nil
}

// compileArtifact loads and compiles the function's artifact as is.
func (d *Driver) compileArtifact(ctx context.Context, spec sandbox.Spec, rec *phase.Recorder) (*program, error) {
	start := time.Now()
	bin, err := spec.Load()
	if err != nil {
		return nil, fmt.Errorf("wasm: load artifact %s: %w", spec.Artifact, err)
	}
	rec.Since(phase.ArtifactLoad, start, "")
	return d.compile(ctx, spec.Artifact, bin, rec)
}

// compile compiles bin, identified by digest for the cache-hit marker.
func (d *Driver) compile(ctx context.Context, digest string, bin []byte, rec *phase.Recorder) (*program, error) {
	start := time.Now()
	detail := CacheMiss
	var marker string
	if d.cacheDir != "" {
		marker = filepath.Join(d.markerDir(), strings.TrimPrefix(digest, "sha256:"))
		if _, err := os.Stat(marker); err == nil {
			detail = CacheDisk
		}
	}
	mod, err := d.compileProgram(ctx, bin)
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

// checkCommand rejects modules kindling cannot run as commands.
func checkCommand(m wazero.CompiledModule, memoryMB int) error {
	if _, ok := m.ExportedFunctions()[exportStart]; !ok {
		return fmt.Errorf("module exports neither _start (a WASI command) nor _initialize and kindling_handle (a reactor built with the kindling SDK): %w", errdefs.ErrInvalidArgument)
	}
	limit := uint64(memoryMB) << 20
	for _, mem := range m.ExportedMemories() {
		if min := uint64(mem.Min()) * wasmPageSize; min > limit {
			return fmt.Errorf("module needs %d MiB of memory at start, more than its memory limit of %d MiB: %w",
				min>>20, memoryMB, errdefs.ErrInvalidArgument)
		}
	}
	if len(m.ImportedMemories()) > 0 {
		return fmt.Errorf("module imports its memory; only modules that define their own memory are supported: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// release drops a reference taken by shared; the last one closes the value.
func (d *Driver) release(key string) {
	d.mu.Lock()
	e, ok := d.compiled[key]
	if !ok {
		d.mu.Unlock()
		return
	}
	e.refs--
	last := e.refs == 0
	if last {
		delete(d.compiled, key)
	}
	d.mu.Unlock()
	if last {
		if c, ok := e.value.(interface{ Close(context.Context) error }); ok {
			_ = c.Close(context.Background())
		}
	}
}

// wasmPageSize is the size of a WebAssembly memory page.
const wasmPageSize = 65536

type prepared struct {
	d          *Driver
	spec       sandbox.Spec
	mode       string
	reason     string    // why the command mode was chosen
	module     *program  // command mode
	snap       *snapshot // snapshot mode
	release    func()
	baseConfig wazero.ModuleConfig
	env        *environ // the function's own variables
	closeOnce  sync.Once

	// Snapshot mode keeps instances that finished cleanly, reset to the
	// snapshot, for the next requests.
	pool   chan *reactor
	poolMu sync.Mutex
	closed bool
}

var _ sandbox.StartModer = (*prepared)(nil)

// StartMode implements sandbox.StartModer.
func (p *prepared) StartMode() (string, string) { return p.mode, p.reason }

// Start implements sandbox.Prepared. A snapshot-mode function hands out a
// pooled instance already reset to the snapshot if it has one, or restores
// a new one from the snapshot now, so that an instance started ahead of
// demand is ready to serve. A command-mode instance is created inside
// Invoke, when the request's environment is known.
func (p *prepared) Start(ctx context.Context, rec *phase.Recorder) (sandbox.Instance, error) {
	if p.pool == nil {
		return &instance{p: p}, nil
	}
	select {
	case r := <-p.pool:
		return &instance{p: p, reactor: r, pooled: true}, nil
	default:
	}
	r, err := p.newReactor(ctx, rec)
	if err != nil {
		return nil, err
	}
	return &instance{p: p, reactor: r}, nil
}

// Close implements sandbox.Prepared.
func (p *prepared) Close(ctx context.Context) error {
	p.closeOnce.Do(func() {
		if p.pool != nil {
			p.poolMu.Lock()
			p.closed = true
			p.poolMu.Unlock()
			for {
				select {
				case r := <-p.pool:
					r.close()
					continue
				default:
				}
				break
			}
		}
		p.release()
	})
	return nil
}

type instance struct {
	p       *prepared
	reactor *reactor // snapshot mode: the instance, restored from the snapshot
	pooled  bool     // the reactor was taken ready from the pool
	used    bool
}

// Close implements sandbox.Instance.
func (i *instance) Close(ctx context.Context) error {
	if !i.used && i.reactor != nil {
		i.p.put(i.reactor) // never invoked: still pristine
	}
	return nil
}

// Invoke implements sandbox.Instance.
func (i *instance) Invoke(ctx context.Context, req *sandbox.Request) (sandbox.Result, error) {
	if i.used {
		return sandbox.Result{}, fmt.Errorf("wasm: instance already used (single-use): %w", errdefs.ErrFailedPrecondition)
	}
	i.used = true
	if i.p.snap != nil {
		return i.invokeReactor(ctx, req)
	}
	return i.invokeCommand(ctx, req)
}

// invokeCommand instantiates a fresh module and runs _start.
func (i *instance) invokeCommand(ctx context.Context, req *sandbox.Request) (sandbox.Result, error) {
	p := i.p
	rec := req.Phases
	begin := time.Now()
	env, err := newEnviron(p.spec.Env, req.Env)
	if err != nil {
		return sandbox.Result{}, fmt.Errorf("wasm: request: %w", err)
	}
	ctx = withEnviron(ctx, env) // what WASI's environ calls answer
	io := &stdio{}
	cfg := p.baseConfig.
		WithStdin(stdinReader{io}).
		WithStdout(stdoutWriter{io}).
		WithStderr(stderrWriter{io})
	mem := &memoryLimit{limit: uint64(p.spec.MemoryMB) << 20, spares: &p.d.spares}
	mod, err := p.module.instantiate(experimental.WithMemoryAllocator(ctx, mem), cfg)
	t := rec.Since(phase.Instantiate, begin, "")
	if err != nil {
		mem.free()
		return sandbox.Result{}, classify(ctx, err, mem, "instantiate")
	}
	io.bind(req.Stdin, req.Stdout, req.Stderr, t)
	_, err = callGuest(ctx, mod, mod.ExportedFunction(exportStart))
	end := time.Now()
	recordRun(rec, t, io.firstTouch(end), end)

	res := sandbox.Result{MemoryBytes: memSize(mod)}
	if p.d.accounting {
		res.TouchedBytes = mem.touched(res.MemoryBytes)
	}
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

// recordRun splits the guest's time at its first touch of the request.
func recordRun(rec *phase.Recorder, start, touch, end time.Time) {
	rec.Add(phase.Startup, touch.Sub(start), "")
	rec.Add(phase.Run, end.Sub(touch), "")
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

// fsConfig preopens the mounts as WASI directories.
func fsConfig(mounts []sandbox.Mount) wazero.FSConfig {
	fs := wazero.NewFSConfig()
	for _, m := range mounts {
		if m.ReadOnly {
			fs = fs.WithReadOnlyDirMount(m.HostPath, m.GuestPath)
		} else {
			fs = fs.WithDirMount(m.HostPath, m.GuestPath)
		}
	}
	return fs
}

// engineVersion identifies the compiler that produced cached code.
func engineVersion() string { return "wazero-" + wazeroVersion }
