package microvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kindling-dev/kindling/agent"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
)

// RuntimeName is the name functions use to select this sandbox.
const RuntimeName = "microvm"

// Start modes, as reported by StartMode.
const (
	StartRestore = "restore" // a clone of the function's template
	StartBoot    = "boot"    // a fresh boot
)

// Option configures a Driver.
type Option func(*Driver)

// WithPrefetch sets how instances prefetch their template's pages. By
// default they prefetch the working set (PrefetchWorkingSet) recorded by
// the template's first instance.
func WithPrefetch(p Prefetch) Option { return func(d *Driver) { d.prefetch = p } }

// WithColdBoot makes every Start boot a new VM instead of restoring a
// template: the baseline templating is measured against.
func WithColdBoot() Option { return func(d *Driver) { d.coldBoot = true } }

// WithIdleTemplates keeps up to n templates of functions no longer
// prepared (default 4), so preparing one again does not boot.
func WithIdleTemplates(n int) Option { return func(d *Driver) { d.idle = n } }

// Driver is the microvm sandbox: sandbox.Driver over a Manager, with one
// template snapshot per prepared function (and memory size) and a clone of
// it per instance.
type Driver struct {
	m        *Manager
	prefetch Prefetch
	coldBoot bool
	idle     int

	mu        sync.Mutex
	templates map[string]*template
}

// template is a function's template: its initramfs and, unless the driver
// boots cold, the snapshot its instances are cloned from.
type template struct {
	key, name string
	memoryMB  int
	ready     chan struct{} // closed once built (or failed)
	err       error
	initrd    string
	snap      *snapshot
	refs      int
	lastUsed  time.Time
	recording atomic.Bool // the working set has been (or is being) recorded
}

// New returns a Driver on a new Manager (see NewManager).
func New(ctx context.Context, cfg Config, opts ...Option) (*Driver, error) {
	m, err := NewManager(ctx, cfg)
	if err != nil {
		return nil, err
	}
	d := &Driver{m: m, prefetch: PrefetchWorkingSet, idle: 4, templates: map[string]*template{}}
	for _, o := range opts {
		o(d)
	}
	return d, nil
}

// Manager is the driver's snapshot API: its VMs, its templates (as
// snapshots) and snapshots made through it.
func (d *Driver) Manager() *Manager { return d.m }

// Name implements sandbox.Driver.
func (d *Driver) Name() string { return RuntimeName }

// Capabilities implements sandbox.Driver. An instance serves requests one
// after another; its memory limit is the VM's memory.
func (d *Driver) Capabilities() sandbox.Capabilities {
	return sandbox.Capabilities{MemoryLimit: true}
}

// Prepare implements sandbox.Driver: it checks that the artifact is a
// static linux/amd64 executable, builds its initramfs and boots and saves
// its template (phase.Snapshot), unless a template for the same artifact
// and memory size exists.
func (d *Driver) Prepare(ctx context.Context, spec sandbox.Spec, rec *phase.Recorder) (sandbox.Prepared, error) {
	if len(spec.Mounts) > 0 {
		return nil, fmt.Errorf("microvm: %s: mounts are not supported (the guest has no shared filesystem): %w", spec.Name, errdefs.ErrNotImplemented)
	}
	memoryMB := spec.MemoryMB
	if memoryMB <= 0 {
		memoryMB = d.m.cfg.MemoryMB
	}
	key := fmt.Sprintf("%s/%dm", spec.Artifact, memoryMB)
	d.mu.Lock()
	t := d.templates[key]
	if t != nil {
		t.refs++
		d.mu.Unlock()
		start := time.Now()
		select {
		case <-t.ready:
		case <-ctx.Done():
			d.release(t)
			return nil, fmt.Errorf("microvm: prepare %s: %w", spec.Name, ctx.Err())
		}
		if t.err != nil {
			d.release(t)
			return nil, t.err
		}
		rec.Since(phase.Compile, start, "cache=memory")
		return &prepared{d: d, t: t, spec: spec}, nil
	}
	t = &template{key: key, name: spec.Name, memoryMB: memoryMB, ready: make(chan struct{}), refs: 1}
	d.templates[key] = t
	d.mu.Unlock()

	t.err = d.build(ctx, t, spec, rec)
	close(t.ready)
	if t.err != nil {
		d.mu.Lock()
		if d.templates[key] == t {
			delete(d.templates, key) // the next Prepare tries again
		}
		d.mu.Unlock()
		d.release(t)
		return nil, t.err
	}
	return &prepared{d: d, t: t, spec: spec}, nil
}

// build makes t's initramfs and, unless booting cold, its snapshot.
func (d *Driver) build(ctx context.Context, t *template, spec sandbox.Spec, rec *phase.Recorder) error {
	start := time.Now()
	fn, err := spec.Load()
	if err != nil {
		return fmt.Errorf("microvm: load %s: %w", spec.Name, err)
	}
	start = rec.Since(phase.ArtifactLoad, start, "")
	if err := checkExecutable(fn); err != nil {
		return fmt.Errorf("microvm: %s: %w", spec.Name, err)
	}
	img, err := initramfs(d.m.guest.agent, fn, d.m.guest.modules)
	if err != nil {
		return fmt.Errorf("microvm: %s: initramfs: %w", spec.Name, err)
	}
	f, err := d.m.tmpFile("initrd-*")
	if err == nil {
		_, err = f.Write(img)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("microvm: %s: initramfs: %w", spec.Name, err)
	}
	t.initrd = f.Name()
	start = rec.Since(phase.Compile, start, fmt.Sprintf("initramfs=%dKiB", len(img)>>10))
	if d.coldBoot {
		return nil
	}
	// Boot the template and save it: its own phases go in the detail.
	boot := phase.NewRecorder()
	v, err := d.m.bootVM(ctx, newID("tmpl"), t.initrd, spec.Name, t.memoryMB, boot)
	if err != nil {
		return fmt.Errorf("microvm: %s: template: %w", spec.Name, err)
	}
	info, err := d.m.createSnapshot(ctx, v.id, snapshotMeta{
		ID: newID("tmpl-" + sanitize(spec.Name)), Function: spec.Name, Template: true,
	}, boot)
	if err != nil {
		return fmt.Errorf("microvm: %s: template: %w", spec.Name, err)
	}
	if t.snap, err = d.m.snapshot(info.ID); err != nil {
		return err
	}
	var detail []string
	for _, p := range boot.Timings() {
		detail = append(detail, fmt.Sprintf("%s=%s", p.Name, p.Duration.Round(time.Millisecond)))
	}
	rec.Since(phase.Snapshot, start, strings.Join(detail, " "))
	return nil
}

func sanitize(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 24 {
		b = b[:24]
	}
	return string(b)
}

// release drops a reference to t. Unreferenced templates stay, idle,
// until more than d.idle are; then the least recently used go.
func (d *Driver) release(t *template) {
	d.mu.Lock()
	t.refs--
	t.lastUsed = time.Now()
	var idle []*template // refs == 0: built (the builder holds a reference)
	for _, o := range d.templates {
		if o.refs == 0 {
			idle = append(idle, o)
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].lastUsed.After(idle[j].lastUsed) })
	evict := idle[min(d.idle, len(idle)):]
	for _, e := range evict {
		delete(d.templates, e.key)
	}
	if t.refs == 0 && t.err != nil && d.templates[t.key] != t {
		evict = append(evict, t) // failed, already unlisted
	}
	d.mu.Unlock()
	for _, e := range evict {
		d.discard(e)
	}
}

func (d *Driver) discard(t *template) {
	if t.snap != nil {
		d.m.DeleteSnapshot(context.Background(), t.snap.meta.ID)
	}
	if t.initrd != "" {
		os.Remove(t.initrd)
	}
}

// Close implements sandbox.Driver: it destroys every VM and template.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	ts := d.templates
	d.templates = map[string]*template{}
	d.mu.Unlock()
	for _, t := range ts {
		<-t.ready
		d.discard(t)
	}
	return d.m.Close(ctx)
}

// prepared is a function with its template.
type prepared struct {
	d      *Driver
	t      *template
	spec   sandbox.Spec
	closed atomic.Bool
}

// StartMode implements sandbox.StartModer.
func (p *prepared) StartMode() (mode, reason string) {
	if p.d.coldBoot {
		return StartBoot, "the driver is configured to boot every instance (WithColdBoot)"
	}
	return StartRestore, ""
}

// Start implements sandbox.Prepared: a clone of the template (recording
// the working set if it is the template's first), or a fresh boot.
func (p *prepared) Start(ctx context.Context, rec *phase.Recorder) (sandbox.Instance, error) {
	if p.closed.Load() {
		return nil, fmt.Errorf("microvm: %s: prepared function is closed: %w", p.spec.Name, errdefs.ErrFailedPrecondition)
	}
	id := newID("inst")
	if p.d.coldBoot {
		v, err := p.d.m.bootVM(ctx, id, p.t.initrd, p.spec.Name, p.t.memoryMB, rec)
		if err != nil {
			return nil, err
		}
		return &instance{m: p.d.m, v: v, spec: p.spec, t: p.t}, nil
	}
	opts := restoreOptions{prefetch: p.d.prefetch}
	if p.t.recording.CompareAndSwap(false, true) {
		opts.prefetch, opts.recordWorking = PrefetchNone, true
	} else if opts.prefetch == PrefetchWorkingSet {
		if set, err := p.t.snap.pageSet(setWorking); err != nil || len(set.Extents) == 0 {
			opts.prefetch = PrefetchNone // not recorded (yet)
		}
	} else if opts.prefetch == PrefetchLoadingSet {
		if set, err := p.t.snap.pageSet(setLoading); err != nil || len(set.Extents) == 0 {
			opts.prefetch = PrefetchNone
		}
	}
	v, err := p.d.m.restoreVM(ctx, id, p.t.snap, opts, rec)
	if err != nil {
		if opts.recordWorking {
			p.t.recording.Store(false)
		}
		return nil, err
	}
	return &instance{m: p.d.m, v: v, spec: p.spec, t: p.t}, nil
}

// Close implements sandbox.Prepared.
func (p *prepared) Close(ctx context.Context) error {
	if p.closed.CompareAndSwap(false, true) {
		p.d.release(p.t)
	}
	return nil
}

// instance is one VM serving one function.
type instance struct {
	m    *Manager
	v    *vm
	spec sandbox.Spec
	t    *template
}

// Invoke implements sandbox.Instance.
func (i *instance) Invoke(ctx context.Context, req *sandbox.Request) (sandbox.Result, error) {
	start := time.Now()
	var stdin []byte
	if req.Stdin != nil {
		var err error
		if stdin, err = io.ReadAll(io.LimitReader(req.Stdin, agent.MaxMessage/2+1)); err != nil {
			return sandbox.Result{}, fmt.Errorf("microvm: read request body: %w", err)
		}
		if len(stdin) > agent.MaxMessage/2 {
			return sandbox.Result{}, fmt.Errorf("microvm: request body over %d bytes: %w", agent.MaxMessage/2, errdefs.ErrTooLarge)
		}
	}
	areq := &agent.Request{
		Env:   append(append([]string(nil), i.spec.Env...), req.Env...),
		Args:  i.spec.Args,
		Stdin: stdin,
	}
	stdout, stderr := req.Stdout, req.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	resp, err := i.v.invoke(ctx, areq, stdout, stderr, req.Phases)
	res := sandbox.Result{
		MemoryBytes: uint64(i.v.memoryMB) << 20,
		Duration:    time.Since(start),
	}
	if resp != nil {
		res.ExitCode = resp.ExitCode
		i.v.mu.Lock()
		res.Warm = i.v.invocations > 1
		i.v.mu.Unlock()
		res.TouchedBytes = privateBytes(i.v.mach.pid(), i.v.memPath)
	}
	if fe, ok := errdefs.AsFunctionError(err); ok && fe.Kind == errdefs.KindExit {
		res.ExitCode = fe.ExitCode
	}
	return res, err
}

// Close implements sandbox.Instance: the VM is destroyed.
func (i *instance) Close(ctx context.Context) error {
	if i.v.recordPending.Load() {
		i.t.recording.Store(false) // closed before its first invocation: the next instance records
	}
	err := i.m.DeleteVM(ctx, i.v.id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil // already gone with the manager
	}
	return err
}
