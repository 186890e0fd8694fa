// Package ocibench measures the cold start of kindling's oci sandbox side
// by side with its peers running the same image and command in the same
// run: the bare OCI runtimes (`runc run`, `crun run` of the same kind of
// bundle) and `ctr run --rm` against a private containerd (Debian's
// package) the benchmark starts with its root, state and socket in a
// temporary directory. It also measures a warm request to a running
// instance against the same program started on the host (agent.Exec), the
// part of a warm request the container, the socket and the protocol add.
//
// `kindling bench --sandbox oci` prints its table. Every run of every
// column checks the workload's result; the columns of one run are
// interleaved, in an order rotated from run to run, so that a noisy host
// affects them alike. A column whose binary is missing (or that this host
// cannot run, such as crun on cgroups in hybrid mode) shows "n/a" and the
// reason instead of failing the table. It needs root.
package ocibench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/typeurl/v2"

	"github.com/kindling-dev/kindling/agent"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/image"
	"github.com/kindling-dev/kindling/internal/quantile"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/sandbox/oci"
	"github.com/kindling-dev/kindling/shim/containerdtest"
	"github.com/kindling-dev/kindling/workloads"
)

// The table's columns.
const (
	// ColumnKindlingRunc and ColumnKindlingCrun are kindling's cold start:
	// Prepare of a function whose image is in the store, Start (a new
	// container, its agent ready) and the first Invoke, to its response.
	// Closing the instance afterwards is timed as phase teardown, outside
	// the cold start.
	ColumnKindlingRunc = "kindling oci/runc"
	ColumnKindlingCrun = "kindling oci/crun"
	// ColumnRuncRun and ColumnCrunRun are the bare runtime running the
	// function's command as the container's process in the same kind of
	// bundle (oci.BareBundle): create, start, wait, delete.
	ColumnRuncRun = "runc run"
	ColumnCrunRun = "crun run"
	// ColumnCtrRun is a whole `ctr run --rm` of the same image (imported
	// into the private containerd) with the same command and limits.
	ColumnCtrRun = "ctr run --rm"
	// ColumnWarm is one request to a running kindling instance (runc).
	ColumnWarm = "warm invoke (runc)"
	// ColumnHostExec is the same program run on the host by the agent's
	// own code (agent.Exec), no container: the floor of a warm request.
	ColumnHostExec = "host exec"
)

// Columns lists the columns in table order.
var Columns = []string{ColumnKindlingRunc, ColumnKindlingCrun, ColumnRuncRun, ColumnCrunRun, ColumnCtrRun, ColumnWarm, ColumnHostExec}

// Defaults for Options.
const (
	DefaultRuns     = 10
	DefaultMemoryMB = 1024 // one CPU: the oci sandbox gives a CPU per GiB
	runTimeout      = 2 * time.Minute
)

// DefaultWorkloads are the workloads Run measures when given none.
var DefaultWorkloads = []string{"hello-world", "json"}

// Workload is one function to measure.
type Workload = workloads.Binary

// BuildWorkloads builds the named workloads (default DefaultWorkloads) as
// static linux binaries into dir.
func BuildWorkloads(ctx context.Context, dir string, names ...string) ([]Workload, error) {
	if len(names) == 0 {
		names = DefaultWorkloads
	}
	ws, err := workloads.BuildLinux(ctx, dir, names...)
	if err != nil {
		return nil, fmt.Errorf("ocibench: %w", err)
	}
	return ws, nil
}

// Options configure Run.
type Options struct {
	// Runs is the number of measured runs per column (default
	// DefaultRuns), after one warm-up run of each.
	Runs int
	// Workloads to measure; default the workloads Names, built from
	// source.
	Workloads []Workload
	// Names are the workloads to build when Workloads is empty; default
	// DefaultWorkloads.
	Names []string
	// Progress, when set, receives a line per run.
	Progress io.Writer
	// MemoryMB is every container's memory limit (default
	// DefaultMemoryMB), which also sets its CPU quota.
	MemoryMB int
	// AgentPath is a static kindling-agent; empty builds one from source.
	AgentPath string
	// Dir is a scratch directory, emptied; default a temporary one,
	// removed after. Its path must be short: sockets live under it.
	Dir string
}

// Run measures every workload in every column this host can run.
func Run(ctx context.Context, opts Options) (*Table, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("ocibench: needs root: containers mount overlayfs and create cgroups, and containerd runs as root: %w", errdefs.ErrFailedPrecondition)
	}
	if opts.Runs <= 0 {
		opts.Runs = DefaultRuns
	}
	if opts.MemoryMB <= 0 {
		opts.MemoryMB = DefaultMemoryMB
	}
	if opts.Dir == "" {
		tmp, err := os.MkdirTemp("", "kob-")
		if err != nil {
			return nil, fmt.Errorf("ocibench: %w", err)
		}
		defer os.RemoveAll(tmp)
		opts.Dir = tmp
	}
	b := &bench{opts: opts, dir: opts.Dir}
	if len(b.opts.Workloads) == 0 {
		names := b.opts.Names
		if len(names) == 0 {
			names = DefaultWorkloads
		}
		b.progress("building %s", strings.Join(names, ", "))
		ws, err := BuildWorkloads(ctx, filepath.Join(b.dir, "build"), names...)
		if err != nil {
			return nil, err
		}
		b.opts.Workloads = ws
	}
	if b.opts.AgentPath == "" {
		b.progress("building kindling-agent")
		p, err := workloads.BuildAgent(ctx, filepath.Join(b.dir, "build"))
		if err != nil {
			return nil, fmt.Errorf("ocibench: %w (or set Options.AgentPath)", err)
		}
		b.opts.AgentPath = p
	}
	b.table = &Table{Runs: opts.Runs, MemoryMB: opts.MemoryMB, Columns: Columns, Unavailable: map[string]string{}, LoadBefore: loadAverage()}
	defer b.close()
	if err := b.setUp(ctx); err != nil {
		return nil, err
	}
	for _, w := range b.opts.Workloads {
		row, err := b.workload(ctx, w)
		if err != nil {
			return nil, fmt.Errorf("ocibench: %s: %w", w.Name, err)
		}
		b.table.Rows = append(b.table.Rows, row)
	}
	b.table.LoadAfter = loadAverage()
	if b.ctrLost > 0 {
		b.table.Notes = append(b.table.Notes, fmt.Sprintf("%s printed nothing %d times (ctr's output race); those runs were repeated", ColumnCtrRun, b.ctrLost))
	}
	if lag := b.starts.lag(); lag.N > 0 {
		b.table.Notes = append(b.table.Notes, fmt.Sprintf("%s: stdin ends when containerd's TaskStart event arrives (ctr loses an earlier end); "+
			"the event arrived %s ms (median (p90)) after containerd published it", ColumnCtrRun, lag))
	}
	return b.table, nil
}

// bench is one Run's state: drivers and containerd, shared by the
// workloads.
type bench struct {
	opts    Options
	dir     string
	table   *Table
	store   *image.Store
	drivers map[string]*oci.Driver // by runtime: "runc", "crun"
	ctrd    *containerdtest.Daemon
	starts  taskStarts
	ctrLost int // ctr runs repeated because ctr lost their output
	// stopWatch ends the subscription to containerd's events.
	stopWatch context.CancelFunc
}

// runtimes are the OCI runtimes measured, with their columns.
var runtimes = []struct{ name, kindling, bare string }{
	{"runc", ColumnKindlingRunc, ColumnRuncRun},
	{"crun", ColumnKindlingCrun, ColumnCrunRun},
}

// setUp opens the image store, a driver per runtime and containerd; what
// cannot run marks its columns unavailable.
func (b *bench) setUp(ctx context.Context) error {
	var err error
	if b.store, err = image.Open(filepath.Join(b.dir, "images")); err != nil {
		return fmt.Errorf("ocibench: %w", err)
	}
	b.drivers = map[string]*oci.Driver{}
	for _, rt := range runtimes {
		cols := []string{rt.kindling, rt.bare}
		if rt.name == "runc" {
			cols = append(cols, ColumnWarm)
		}
		if _, err := exec.LookPath(rt.name); err != nil {
			b.unavailable(cols, rt.name+" not installed", nil)
			continue
		}
		if rt.name == "crun" {
			if err := oci.CheckHybridCgroups(); err != nil {
				b.unavailable(cols, "crun refuses hybrid cgroups, see notes", err)
				continue
			}
		}
		d, err := oci.New(ctx, oci.Config{Root: filepath.Join(b.dir, rt.name), Runtime: rt.name, Images: b.store, AgentPath: b.opts.AgentPath})
		if err != nil {
			b.unavailable(cols, "driver failed, see notes", err)
			continue
		}
		b.drivers[rt.name] = d
	}
	if reason := containerdtest.Missing(); reason != "" {
		b.unavailable([]string{ColumnCtrRun}, reason, nil)
		return nil
	}
	ctrdDir := filepath.Join(b.dir, "ctrd")
	if err := os.MkdirAll(ctrdDir, 0o700); err != nil {
		return fmt.Errorf("ocibench: %w", err)
	}
	b.progress("starting a private containerd in %s", ctrdDir)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	b.ctrd, err = containerdtest.Start(sctx, containerdtest.Config{
		Dir:          ctrdDir,
		SandboxImage: "docker.io/kindling-bench/unused:latest", // no pods are run
		Runtimes:     map[string]string{"runc": "io.containerd.runc.v2"},
	})
	if err != nil {
		b.unavailable([]string{ColumnCtrRun}, "containerd did not start, see notes", err)
		return nil
	}
	client, err := b.ctrd.Client()
	if err == nil {
		var wctx context.Context
		wctx, b.stopWatch = context.WithCancel(context.WithoutCancel(ctx))
		err = b.starts.watch(wctx, client)
	}
	if err != nil {
		b.unavailable([]string{ColumnCtrRun}, "containerd's events failed, see notes", err)
		b.ctrd.Close()
		b.ctrd = nil
	}
	return nil
}

func (b *bench) unavailable(cols []string, reason string, err error) {
	for _, c := range cols {
		b.table.Unavailable[c] = reason
	}
	if err != nil {
		b.table.Notes = append(b.table.Notes, fmt.Sprintf("%s: %v", strings.Join(cols, ", "), err))
	}
}

func (b *bench) close() {
	ctx := context.Background()
	for _, d := range b.drivers {
		d.Close(ctx)
	}
	if b.stopWatch != nil {
		b.stopWatch()
	}
	if b.ctrd != nil {
		b.ctrd.Close()
	}
}

func (b *bench) progress(format string, args ...any) {
	if b.opts.Progress != nil {
		fmt.Fprintf(b.opts.Progress, "ocibench: "+format+"\n", args...)
	}
}

// sample is one run of one column.
type sample struct {
	total  time.Duration
	phases []phase.Timing
	stdout []byte
}

// column is a way of running the workload once.
type column struct {
	name string
	run  func(ctx context.Context) (sample, error)
}

// workload measures one workload in every available column.
func (b *bench) workload(ctx context.Context, w Workload) (Row, error) {
	row := Row{Workload: w.Name, Cells: map[string]Stat{}, Phases: map[string][]PhaseStat{}}
	tarball, err := imageTarball(w)
	if err != nil {
		return row, err
	}
	img, err := b.store.ImportBytes(ctx, tarball)
	if err != nil {
		return row, err
	}
	spec := sandbox.Spec{Name: w.Name, Artifact: img.ID, MemoryMB: b.opts.MemoryMB}

	var cols []column
	var cleanup []func()
	defer func() {
		for _, f := range slices.Backward(cleanup) {
			f()
		}
	}()
	for _, rt := range runtimes {
		d := b.drivers[rt.name]
		if d == nil {
			continue
		}
		p, err := d.Prepare(ctx, spec, nil)
		if err != nil {
			return row, err
		}
		cleanup = append(cleanup, func() { p.Close(context.Background()) })
		cols = append(cols, column{rt.kindling, func(ctx context.Context) (sample, error) { return coldStart(ctx, d, spec, w) }})
		bare, err := d.NewBareBundle(p, nil)
		if err != nil {
			return row, err
		}
		cleanup = append(cleanup, func() { bare.Close() })
		cols = append(cols, column{rt.bare, func(ctx context.Context) (sample, error) {
			var out bytes.Buffer
			start := time.Now()
			err := bare.Run(ctx, &out, nil)
			return sample{total: time.Since(start), stdout: out.Bytes()}, err
		}})
		if rt.name == "runc" {
			inst, err := p.Start(ctx, nil)
			if err != nil {
				return row, err
			}
			cleanup = append(cleanup, func() { inst.Close(context.Background()) })
			cols = append(cols, column{ColumnWarm, func(ctx context.Context) (sample, error) {
				var out bytes.Buffer
				start := time.Now()
				_, err := inst.Invoke(ctx, &sandbox.Request{Stdin: bytes.NewReader(w.Stdin), Stdout: &out})
				return sample{total: time.Since(start), stdout: out.Bytes()}, err
			}})
		}
	}
	if b.ctrd != nil {
		ref, err := b.ctrd.ImportArchive(ctx, "default", tarball, true)
		if err != nil {
			return row, err
		}
		prefix := fmt.Sprintf("ocibench-%s-%d", w.Name, time.Now().UnixNano())
		n := 0
		cols = append(cols, column{ColumnCtrRun, func(ctx context.Context) (sample, error) {
			for lost := 0; ; lost++ { // see containerdtest.CtrLostMax
				n++
				s, err := b.ctrRun(ctx, ref, prefix+"-"+strconv.Itoa(n), w)
				if err != nil || len(s.stdout) > 0 || lost == containerdtest.CtrLostMax {
					return s, err
				}
				b.ctrLost++
			}
		}})
	}
	host := &agent.Exec{Path: w.Path}
	cols = append(cols, column{ColumnHostExec, func(ctx context.Context) (sample, error) {
		start := time.Now()
		resp := host.Run(ctx, &agent.Request{Stdin: w.Stdin})
		s := sample{total: time.Since(start), stdout: resp.Stdout}
		if resp.Error != "" || resp.ExitCode != 0 {
			return s, fmt.Errorf("exit code %d %s: %s", resp.ExitCode, resp.Error, resp.Stderr)
		}
		return s, nil
	}})

	samples := map[string][]sample{}
	for run := -1; run < b.opts.Runs; run++ { // run -1 warms up
		var line []string
		for k := range cols {
			c := cols[(max(run, 0)+k)%len(cols)]
			rctx, cancel := context.WithTimeout(ctx, runTimeout)
			s, err := c.run(rctx)
			cancel()
			if err == nil {
				err = w.Check(s.stdout)
			}
			if err != nil {
				return row, fmt.Errorf("%s, run %d: %w", c.name, run+1, err)
			}
			if run >= 0 {
				samples[c.name] = append(samples[c.name], s)
				line = append(line, fmt.Sprintf("%s %.1f", c.name, ms(s.total)))
			}
		}
		if run >= 0 {
			b.progress("%s run %d/%d (ms): %s", w.Name, run+1, b.opts.Runs, strings.Join(line, ", "))
		}
	}
	for name, ss := range samples {
		var totals []time.Duration
		for _, s := range ss {
			totals = append(totals, s.total)
		}
		row.Cells[name] = Stat(quantile.Summarize(totals))
		if name == ColumnKindlingRunc || name == ColumnKindlingCrun {
			row.Phases[name] = phaseStats(ss)
		}
	}
	row.Ratios = ratios(row)
	return row, nil
}

// coldStart is one kindling cold start: Prepare (the image is in the
// store), Start and the first Invoke; then Close, timed as teardown.
func coldStart(ctx context.Context, d *oci.Driver, spec sandbox.Spec, w Workload) (sample, error) {
	rec := phase.NewRecorder()
	var out, logs bytes.Buffer
	start := time.Now()
	p, err := d.Prepare(ctx, spec, rec)
	if err != nil {
		return sample{}, err
	}
	defer p.Close(ctx)
	inst, err := p.Start(ctx, rec)
	if err != nil {
		return sample{}, err
	}
	_, err = inst.Invoke(ctx, &sandbox.Request{Stdin: bytes.NewReader(w.Stdin), Stdout: &out, Stderr: &logs, Phases: rec})
	s := sample{total: time.Since(start), stdout: out.Bytes()}
	t := time.Now()
	cerr := inst.Close(ctx)
	rec.Since(phase.Teardown, t, "")
	s.phases = rec.Timings()
	if err != nil {
		return s, fmt.Errorf("%w: %s", err, strings.TrimSpace(logs.String()))
	}
	return s, cerr
}

// ctrRun times one `ctr run --rm` of the image, with kindling's memory
// limit and CPU quota, its output on ctr's stdout as a user sees it, and
// runc's state in the benchmark's directory (on the same file system as
// the host's /run/containerd/runc here).
//
// Its stdin is a pipe that carries the request's body and ends once
// containerd reports the task started (see taskStarts): ctr 1.6 loses an
// end of its stdin that comes before the task exists (its stdinCloser is
// set only after NewTask returns), and a function that reads its body to
// the end, as the workloads do, would wait forever. The event's delivery
// is thus inside this column's time.
func (b *bench) ctrRun(ctx context.Context, ref, id string, w Workload) (sample, error) {
	cpus := oci.CPUsFor(b.opts.MemoryMB, oci.DefaultMinCPUs)
	cmd := exec.CommandContext(ctx, "ctr", "--address", b.ctrd.Address, "--namespace", "default", "run", "--rm",
		"--memory-limit", strconv.FormatInt(int64(b.opts.MemoryMB)<<20, 10), "--cpus", strconv.FormatFloat(cpus, 'f', -1, 64),
		"--runc-root", filepath.Join(b.dir, "ctrd", "runc"), // not the host's /run/containerd/runc
		ref, id)
	stdin, body, err := os.Pipe()
	if err != nil {
		return sample{}, err
	}
	defer body.Close()
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	started := b.starts.expect(id)
	defer b.starts.forget(id)
	start := time.Now()
	err = cmd.Start()
	stdin.Close()
	if err != nil {
		return sample{}, fmt.Errorf("ctr run: %w", err)
	}
	go func() {
		select {
		case <-started:
			_, _ = body.Write(w.Stdin)
		case <-ctx.Done():
		}
		body.Close()
	}()
	err = cmd.Wait()
	s := sample{total: time.Since(start), stdout: stdout.Bytes()}
	if err != nil {
		return s, fmt.Errorf("ctr run: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return s, nil
}

// taskStarts tells ctr runs when containerd has started their task,
// from one subscription to containerd's events.
type taskStarts struct {
	mu      sync.Mutex
	waiting map[string]chan struct{}
	// lags are how long each awaited event took from containerd's
	// publishing it to its arrival here.
	lags []time.Duration
}

// probeTopic is the topic of the event that proves the subscription live.
const probeTopic = "/ocibench/probe"

// watch subscribes to containerd's task start events and returns once the
// subscription delivers events (containerd registers it after the call
// returns): then no start of a later run is missed.
func (ts *taskStarts) watch(ctx context.Context, client *containerd.Client) error {
	ts.waiting = map[string]chan struct{}{}
	ctx = namespaces.WithNamespace(ctx, "default")
	envs, errs := client.Subscribe(ctx, `topic=="/tasks/start"`, `topic=="`+probeTopic+`"`)
	live := make(chan struct{})
	go func() {
		probed := false
		for {
			select {
			case env := <-envs:
				if env.Topic == probeTopic {
					if !probed {
						probed = true
						close(live)
					}
					continue
				}
				if v, err := typeurl.UnmarshalAny(env.Event); err == nil {
					if e, ok := v.(*apievents.TaskStart); ok {
						ts.fire(e.ContainerID, time.Since(env.Timestamp))
					}
				}
			case <-errs:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	deadline := time.After(30 * time.Second)
	for {
		if err := client.EventService().Publish(ctx, probeTopic, &apievents.TaskStart{ContainerID: "probe"}); err != nil {
			return fmt.Errorf("containerd events: %w", err)
		}
		select {
		case <-live:
			return nil
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			return errors.New("containerd events: the subscription delivers nothing")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (ts *taskStarts) expect(id string) <-chan struct{} {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ch := make(chan struct{})
	ts.waiting[id] = ch
	return ch
}

func (ts *taskStarts) forget(id string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.waiting, id)
}

func (ts *taskStarts) fire(id string, lag time.Duration) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ch, ok := ts.waiting[id]; ok {
		close(ch)
		delete(ts.waiting, id)
		ts.lags = append(ts.lags, lag)
	}
}

// lag summarizes the events' delivery lags.
func (ts *taskStarts) lag() Stat {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return Stat(quantile.Summarize(ts.lags))
}

// imageTarball is the workload's image: one layer holding the binary,
// which is the entrypoint. It is an OCI layout, which kindling's store and
// containerd both import, so both run the same image.
func imageTarball(w Workload) ([]byte, error) {
	base := filepath.Base(w.Path)
	var buf bytes.Buffer
	err := image.Build(&buf, image.BuildSpec{
		Ref:    "kindling-bench/" + w.Name + ":latest",
		Config: image.Config{Entrypoint: []string{"/" + base}},
		Layers: []image.Layer{{{Path: base, Source: w.Path, Mode: 0o755}}},
		Format: image.OCILayout,
	})
	if err != nil {
		return nil, fmt.Errorf("ocibench: %w", err)
	}
	return buf.Bytes(), nil
}

// loadAverage is /proc/loadavg's 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
