// Package function is kindling's function service: it deploys functions
// (validating and preparing their artifacts through a sandbox driver and
// storing them durably) and invokes them, recording every invocation's
// phases, logs, metrics and outcome.
//
// The hot path takes no global lock: functions live in a sync.Map, each
// function's prepared artifact is reference-counted with atomics, and
// invocation records reach the store through a batching writer.
package function

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/logs"
	"github.com/kindling-dev/kindling/metrics"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/scheduler"
	"github.com/kindling-dev/kindling/store"
	"github.com/kindling-dev/kindling/tracing"
)

// Limits on what a function may produce.
const (
	MaxResponseBytes = 16 << 20 // stdout kept for the response
	maxStderrBytes   = 1 << 20  // stderr kept for the log, per invocation
	stderrTailBytes  = 4 << 10  // stderr kept in the invocation record
	keepInvocations  = 100_000  // invocation records kept in the store
)

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Config configures a Service.
type Config struct {
	Store   *store.Store
	Drivers []sandbox.Driver
	Logs    *logs.Dir
	Metrics *metrics.Metrics // optional
	Logger  *slog.Logger     // optional
	// Scheduler pools instances; nil means a scheduler with no memory
	// budget and the default keep-alive policy.
	Scheduler *scheduler.Scheduler
	// Tracer turns invocations into OpenTelemetry traces; nil disables.
	Tracer *tracing.Tracer
}

// Service deploys and invokes functions. It is safe for concurrent use.
type Service struct {
	store   *store.Store
	drivers map[string]sandbox.Driver
	logs    *logs.Dir
	metrics *metrics.Metrics
	log     *slog.Logger

	fns      sync.Map // name -> *entry
	deployMu sync.Mutex
	sched    *scheduler.Scheduler
	ownSched bool

	records *recordWriter
	traces  *traceQueue
	live    sync.Map // invocation id -> *liveLog, while running

	// Asynchronous jobs.
	jobs       sync.WaitGroup
	asyncSlots chan struct{} // bounds concurrently running jobs
	stopJobs   chan struct{}
	jobCtx     context.Context
	cancelJobs context.CancelFunc
}

// asyncWorkers bounds the asynchronous invocations running at once.
const asyncWorkers = 64

// New loads the deployed functions from the store and returns the service.
// Artifacts are prepared lazily, on a function's first invocation.
func New(cfg Config) (*Service, error) {
	s := &Service{
		store:   cfg.Store,
		drivers: map[string]sandbox.Driver{},
		logs:    cfg.Logs,
		metrics: cfg.Metrics,
		log:     cfg.Logger,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.sched = cfg.Scheduler
	if s.sched == nil {
		s.sched, s.ownSched = scheduler.New(scheduler.Options{Logger: s.log}), true
	}
	for _, d := range cfg.Drivers {
		s.drivers[d.Name()] = d
	}
	fns, err := s.store.ListFunctions()
	if err != nil {
		return nil, fmt.Errorf("load functions: %w", err)
	}
	for _, f := range fns {
		d, ok := s.drivers[f.Runtime]
		if !ok {
			s.log.Warn("function's runtime is not available; it will fail until redeployed", "function", f.Name, "runtime", f.Runtime)
		}
		e := newEntry(f, d)
		if err := s.register(e); err != nil {
			s.log.Warn("function not schedulable; it will fail until redeployed", "function", f.Name, "err", err)
		}
		s.fns.Store(f.Name, e)
	}
	if s.metrics != nil {
		s.metrics.Functions.Set(float64(len(fns)))
	}
	s.records = newRecordWriter(s.store, s.log)
	s.traces = newTraceQueue(cfg.Tracer)
	s.asyncSlots, s.stopJobs = make(chan struct{}, asyncWorkers), make(chan struct{})
	s.jobCtx, s.cancelJobs = context.WithCancel(context.Background())
	return s, nil
}

// Close flushes pending invocation records and releases prepared functions.
func (s *Service) Close(ctx context.Context) error {
	// Jobs not started stay in the store for the next start; running ones
	// are cancelled and, their result unrecorded, run again then.
	close(s.stopJobs)
	s.cancelJobs()
	s.jobs.Wait()
	if s.ownSched {
		_ = s.sched.Close(ctx)
	}
	s.records.close()
	s.traces.close()
	s.fns.Range(func(_, v any) bool {
		v.(*entry).retire(ctx)
		return true
	})
	return nil
}

// Runtimes lists the available sandbox runtimes.
func (s *Service) Runtimes() []string {
	out := make([]string, 0, len(s.drivers))
	for name := range s.drivers {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// validate applies defaults to spec and checks every field.
func (s *Service) validate(name string, spec *api.FunctionSpec) error {
	if !nameRE.MatchString(name) {
		return invalid("name", "%q must be 1-63 characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit", name)
	}
	if spec.Runtime == "" {
		spec.Runtime = api.DefaultRuntime
	}
	if _, ok := s.drivers[spec.Runtime]; !ok {
		return invalid("runtime", "unknown runtime %q (available: %s)", spec.Runtime, strings.Join(s.Runtimes(), ", "))
	}
	if spec.MemoryMB == 0 {
		spec.MemoryMB = api.DefaultMemoryMB
	}
	if spec.MemoryMB < 1 || spec.MemoryMB > api.MaxMemoryMB {
		return invalid("memoryMB", "%d is outside 1..%d", spec.MemoryMB, api.MaxMemoryMB)
	}
	if spec.TimeoutMs == 0 {
		spec.TimeoutMs = api.DefaultTimeoutMs
	}
	if spec.TimeoutMs < 1 || spec.TimeoutMs > api.MaxTimeoutMs {
		return invalid("timeoutMs", "%d is outside 1..%d", spec.TimeoutMs, api.MaxTimeoutMs)
	}
	for k := range spec.Env {
		if !envKeyRE.MatchString(k) {
			return invalid("env", "%q is not a valid variable name", k)
		}
	}
	if spec.KeepAlive != "" {
		if _, err := scheduler.ParsePolicy(spec.KeepAlive); err != nil {
			return invalid("keepAlive", "%v", err)
		}
	}
	for field, v := range map[string]int{"minInstances": spec.MinInstances, "maxInstances": spec.MaxInstances, "queueSize": spec.QueueSize, "concurrency": spec.Concurrency} {
		if v < 0 || v > 10_000 {
			return invalid(field, "%d is outside 0..10000", v)
		}
	}
	if spec.MaxInstances > 0 && spec.MinInstances > spec.MaxInstances {
		return invalid("minInstances", "%d is more than maxInstances (%d)", spec.MinInstances, spec.MaxInstances)
	}
	if res, ok := s.drivers[spec.Runtime].(sandbox.ImageResolver); ok {
		if spec.Image == "" {
			return invalid("image", "required for runtime %q (import one with POST /v1/images)", spec.Runtime)
		}
		id, err := res.Resolve(spec.Image)
		if err != nil {
			return invalid("image", "%v", err)
		}
		spec.Artifact = id
		return nil
	}
	if spec.Image != "" {
		return invalid("image", "runtime %q runs modules, not images: use artifact", spec.Runtime)
	}
	if spec.Artifact == "" {
		return invalid("artifact", "required (upload the module with POST /v1/artifacts first)")
	}
	if !store.ValidDigest(spec.Artifact) {
		return invalid("artifact", "%q is not a digest of the form sha256:<64 hex digits>", spec.Artifact)
	}
	if !s.store.HasArtifact(spec.Artifact) {
		return invalid("artifact", "%s has not been uploaded (POST /v1/artifacts)", spec.Artifact)
	}
	return nil
}

func (s *Service) sandboxSpec(f api.Function) sandbox.Spec {
	env := make([]string, 0, len(f.Env))
	for k, v := range f.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	digest := f.Artifact
	var load func() ([]byte, error)
	if _, own := s.drivers[f.Runtime].(sandbox.ImageResolver); !own {
		load = func() ([]byte, error) { return s.store.Artifact(digest) }
	}
	return sandbox.Spec{
		Name:     f.Name,
		Artifact: digest,
		Load:     load,
		MemoryMB: f.MemoryMB,
		Args:     f.Args,
		Env:      env,
	}
}

// Deploy creates or replaces function name. The artifact is prepared
// (compiled) before anything is stored, so an artifact the sandbox cannot
// run is rejected with its reason and leaves no trace.
func (s *Service) Deploy(ctx context.Context, name string, spec api.FunctionSpec) (api.Function, error) {
	if err := s.validate(name, &spec); err != nil {
		return api.Function{}, err
	}
	s.deployMu.Lock()
	defer s.deployMu.Unlock()

	now := time.Now().UTC()
	f := api.Function{Name: name, FunctionSpec: spec, Version: 1, CreatedAt: now, UpdatedAt: now}
	old, hadOld := s.lookup(name)
	if hadOld {
		f.Version = old.fn.Version + 1
		f.CreatedAt = old.fn.CreatedAt
	}
	d := s.drivers[spec.Runtime]
	rec := phase.NewRecorder()
	p, err := d.Prepare(ctx, s.sandboxSpec(f), rec)
	if err != nil {
		if errors.Is(err, errdefs.ErrInvalidArgument) {
			// Drop an artifact nobody else uses: a rejected deploy stores nothing.
			if store.ValidDigest(spec.Artifact) && spec.Image == "" {
				_ = s.store.DeleteArtifact(spec.Artifact)
			}
			return api.Function{}, fmt.Errorf("artifact: %w", err)
		}
		return api.Function{}, fmt.Errorf("prepare %q: %w", name, err)
	}
	s.observeCompile(rec.Timings())
	if sm, ok := p.(sandbox.StartModer); ok {
		f.StartMode, f.StartModeReason = sm.StartMode()
	}
	if err := s.store.PutFunction(f); err != nil {
		p.Close(ctx)
		return api.Function{}, fmt.Errorf("deploy %q: %w", name, err)
	}
	e := newEntry(f, d)
	e.setPrepared(p)
	if err := s.register(e); err != nil {
		p.Close(ctx)
		return api.Function{}, fmt.Errorf("schedule %q: %w", name, err)
	}
	s.fns.Store(name, e)
	if hadOld {
		old.retire(ctx)
	} else if s.metrics != nil {
		s.metrics.Functions.Inc()
	}
	s.log.Info("function deployed", "function", name, "runtime", spec.Runtime, "artifact", spec.Artifact,
		"version", f.Version, "start", f.StartMode, "prepare", phase.Total(rec.Timings()))
	return f, nil
}

func (s *Service) observeCompile(ts []phase.Timing) {
	if s.metrics == nil {
		return
	}
	for _, t := range ts {
		if t.Name == phase.Compile {
			s.metrics.CompileCache.WithLabelValues(strings.TrimPrefix(t.Detail, "cache=")).Inc()
		}
	}
}

func (s *Service) lookup(name string) (*entry, bool) {
	v, ok := s.fns.Load(name)
	if !ok {
		return nil, false
	}
	return v.(*entry), true
}

// Get returns a deployed function.
func (s *Service) Get(name string) (api.Function, error) {
	e, ok := s.lookup(name)
	if !ok {
		return api.Function{}, fmt.Errorf("function %q: %w", name, errdefs.ErrNotFound)
	}
	return e.fn, nil
}

// List returns all deployed functions sorted by name.
func (s *Service) List() []api.Function {
	var out []api.Function
	s.fns.Range(func(_, v any) bool {
		out = append(out, v.(*entry).fn)
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Delete removes a function, its logs, and its artifact if unused.
func (s *Service) Delete(ctx context.Context, name string) error {
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	e, ok := s.lookup(name)
	if !ok {
		return fmt.Errorf("function %q: %w", name, errdefs.ErrNotFound)
	}
	if err := s.store.DeleteFunction(name); err != nil {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	s.fns.Delete(name)
	if err := s.sched.Unregister(ctx, name); err != nil {
		s.log.Warn("instances not stopped", "function", name, "err", err)
	}
	e.retire(ctx)
	if e.fn.Image == "" { // images stay in the image store
		if err := s.store.DeleteArtifact(e.fn.Artifact); err != nil {
			s.log.Warn("artifact not removed", "function", name, "err", err)
		}
	}
	if s.logs != nil {
		if err := s.logs.Remove(name); err != nil {
			s.log.Warn("logs not removed", "function", name, "err", err)
		}
	}
	if s.metrics != nil {
		s.metrics.Functions.Dec()
	}
	s.log.Info("function deleted", "function", name)
	return nil
}

// entry is one deployed version of a function and its prepared artifact.
type entry struct {
	fn     api.Function
	driver sandbox.Driver

	prepareMu sync.Mutex
	prepared  atomic.Pointer[sandbox.Prepared]

	refs      atomic.Int64
	retired   atomic.Bool
	closeOnce sync.Once
}

func newEntry(f api.Function, d sandbox.Driver) *entry { return &entry{fn: f, driver: d} }

func (e *entry) setPrepared(p sandbox.Prepared) { e.prepared.Store(&p) }

// acquire pins the entry for one invocation; false if it was retired
// (redeployed or deleted) meanwhile.
func (e *entry) acquire() bool {
	e.refs.Add(1)
	if e.retired.Load() {
		e.release()
		return false
	}
	return true
}

func (e *entry) release() {
	if e.refs.Add(-1) == 0 && e.retired.Load() {
		e.closePrepared()
	}
}

// retire marks the entry replaced; its prepared artifact is closed when
// the last in-flight invocation releases it.
func (e *entry) retire(ctx context.Context) {
	e.retired.Store(true)
	if e.refs.Load() == 0 {
		e.closePrepared()
	}
}

func (e *entry) closePrepared() {
	e.closeOnce.Do(func() {
		if p := e.prepared.Load(); p != nil {
			_ = (*p).Close(context.Background())
		}
	})
}

// ensurePrepared returns the prepared artifact, preparing it on first use
// (after a daemon restart). It reports whether this call prepared it.
func (e *entry) ensurePrepared(ctx context.Context, s *Service, rec *phase.Recorder) (sandbox.Prepared, bool, error) {
	if p := e.prepared.Load(); p != nil {
		return *p, false, nil
	}
	e.prepareMu.Lock()
	defer e.prepareMu.Unlock()
	if p := e.prepared.Load(); p != nil {
		return *p, false, nil
	}
	if e.driver == nil {
		return nil, false, fmt.Errorf("function %q: runtime %q is not available on this host: %w", e.fn.Name, e.fn.Runtime, errdefs.ErrFailedPrecondition)
	}
	p, err := e.driver.Prepare(ctx, s.sandboxSpec(e.fn), rec)
	if err != nil {
		return nil, false, fmt.Errorf("prepare %q: %w", e.fn.Name, err)
	}
	e.setPrepared(p)
	s.observeCompile(rec.Timings())
	return p, true, nil
}

// capped is a writer that keeps at most max bytes and remembers overflow.
type capped struct {
	buf      bytes.Buffer
	max      int
	overflow bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); len(p) > room {
		c.overflow = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		return 0, fmt.Errorf("output exceeds %d bytes", c.max)
	}
	return c.buf.Write(p)
}

// tail is the last max bytes written to a capped buffer.
func tail(b []byte, max int) string {
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// PoolStats reports every function's instances, for metrics.
func (s *Service) PoolStats() []metrics.PoolStats {
	var out []metrics.PoolStats
	s.fns.Range(func(k, _ any) bool {
		if st, ok := s.sched.Stats(k.(string)); ok {
			out = append(out, metrics.PoolStats{Function: k.(string), Starting: st.Starting, Idle: st.Idle,
				Busy: st.Busy, Stopping: st.Stopping, Queued: st.Queued, MemoryMB: st.MemoryMB})
		}
		return true
	})
	return out
}

// Store returns the service's store (for artifact uploads).
func (s *Service) Store() *store.Store { return s.store }
