package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/workloads"
)

// Mode is how much of a cold start a column pays on every run.
type Mode string

// The modes of kindling's sandboxes, in the order their columns appear.
// Sandboxes may add modes of their own (a snapshot restore, say).
const (
	// Cold: nothing prepared, every run loads and compiles the artifact.
	Cold Mode = "cold"
	// Cached: every run prepares the artifact anew in a fresh driver, from
	// a compilation cache that already holds it (a restarted daemon).
	Cached Mode = "cached"
	// Warm: prepared once; every run starts a fresh instance (the steady
	// state). Peers run in this mode.
	Warm Mode = "warm"
	// Snapshot: the workload built as a reactor, initialized and
	// snapshotted once; every run starts from the snapshot.
	Snapshot Mode = "snapshot"
)

// DefaultModes are the modes a run measures when Options.Modes is empty.
// Snapshot is not among them: it builds every workload a second time, as a
// reactor; ask for it with --modes.
var DefaultModes = []Mode{Cold, Cached, Warm}

// defaultRuns is the number of measured runs per column by mode, chosen so
// that the whole suite in the default columns finishes in about three
// minutes on a 2-core machine: a cold run of a Go-built module compiles
// megabytes of WebAssembly (1-4 s), a cached or warm one costs from
// milliseconds to most of a second, depending on the workload.
var defaultRuns = map[Mode]int{Cold: 3, Cached: 5, Warm: 10}

// DefaultRuns returns the default number of measured runs of a column in
// mode m.
func DefaultRuns(m Mode) int {
	if n, ok := defaultRuns[m]; ok {
		return n
	}
	return 10
}

// BaselineColumn is the column other columns' totals are compared with.
const BaselineColumn = "wasm warm"

// Workload is one program to measure, already built.
type Workload struct {
	Name string
	// Expected is the "result" its output must carry (see
	// workloads.ParseResult).
	Expected string
	// Stdin is the request body of every run; nil means empty.
	Stdin []byte
	// Artifacts maps a build target (workloads.TargetWasm, ...) to the
	// path of the workload built for it.
	Artifacts map[string]string
}

// Artifact returns the path of the workload built for target.
func (w Workload) Artifact(target string) (string, error) {
	p, ok := w.Artifacts[target]
	if !ok {
		return "", fmt.Errorf("workload %s has no %s build", w.Name, target)
	}
	return p, nil
}

// ColumnInfo describes a column of the table.
type ColumnInfo struct {
	// Name labels the column: "<sandbox> <mode>" for sandboxes ("wasm
	// cold"), the engine's name for peers ("floor").
	Name    string `json:"name"`
	Sandbox string `json:"sandbox"`
	Mode    Mode   `json:"mode"`
	Peer    bool   `json:"peer,omitempty"`
	// Target is the workloads build target the column runs.
	Target string `json:"target"`
	// About says in one line what one run of the column measures.
	About string `json:"about"`
	// Runs and Warmup are the measured and unmeasured runs per workload;
	// Run fills them in.
	Runs   int `json:"runs"`
	Warmup int `json:"warmup,omitempty"`
}

// Column is one way of running workloads: a sandbox in a mode, or a peer.
type Column interface {
	Info() ColumnInfo
	// Prepare does the column's untimed set-up for one workload (for a
	// warm column: compiling it) and returns what runs it.
	Prepare(ctx context.Context, w Workload) (Runner, error)
}

// Runner runs one workload in one column, over and over.
type Runner interface {
	// Run runs the workload once with req's stdin and stdout. Only what it
	// records into req.Phases is measured; it may do untimed work around
	// that (create and destroy a driver, say). A run that does not exit
	// successfully is an error.
	Run(ctx context.Context, req *sandbox.Request) error
	// Close releases everything the runner holds.
	Close(ctx context.Context) error
}

// Sandbox provides the columns of one sandbox or peer engine.
type Sandbox struct {
	Name string
	// Peer marks a reference engine rather than a kindling sandbox. Peers
	// run in every bench unless Options.Peers says otherwise.
	Peer bool
	// Modes are the modes it supports, in column order.
	Modes []Mode
	// Unavailable, when not empty, says why this build cannot run it
	// ("build with -tags wasmtime"); New is then not called.
	Unavailable string
	// New returns the column of mode m. env is shared by every column of
	// the run.
	New func(m Mode, env *Env) (Column, error)
}

var (
	registryMu sync.Mutex
	registry   []Sandbox
)

// Register makes a sandbox or peer available to Run. It panics if the
// name is taken; call it from an init function.
func Register(s Sandbox) {
	registryMu.Lock()
	defer registryMu.Unlock()
	for _, r := range registry {
		if r.Name == s.Name {
			panic("bench: sandbox " + s.Name + " registered twice")
		}
	}
	registry = append(registry, s)
}

// Sandboxes returns every registered sandbox and peer, in registration
// order.
func Sandboxes() []Sandbox {
	registryMu.Lock()
	defer registryMu.Unlock()
	return slices.Clone(registry)
}

func lookupSandbox(name string) (Sandbox, bool) {
	for _, s := range Sandboxes() {
		if s.Name == name {
			return s, true
		}
	}
	return Sandbox{}, false
}

// Env is what the columns of one run share: a scratch directory, the
// functions' memory limit and set-up done once for all of them.
type Env struct {
	// Dir is a private scratch directory, removed when the run ends.
	Dir string
	// MemoryMB is the memory limit of every instance.
	MemoryMB int

	mu   sync.Mutex
	once map[string]*onceResult
}

type onceResult struct {
	done chan struct{}
	err  error
}

// Once runs fn the first time it is called with key and gives its error to
// every caller with that key, waiting for fn to finish: columns use it to
// share set-up such as filling a compilation cache.
func (e *Env) Once(key string, fn func() error) error {
	e.mu.Lock()
	if e.once == nil {
		e.once = map[string]*onceResult{}
	}
	r, ok := e.once[key]
	if !ok {
		r = &onceResult{done: make(chan struct{})}
		e.once[key] = r
	}
	e.mu.Unlock()
	if !ok {
		r.err = fn()
		close(r.done)
	}
	<-r.done
	return r.err
}

// Options configure Run.
type Options struct {
	// Workloads are the programs to measure, in row order.
	Workloads []Workload
	// Sandboxes are the sandboxes to measure (default "wasm"), each in
	// every mode of Modes it supports.
	Sandboxes []string
	// Modes are the modes to measure (default DefaultModes).
	Modes []Mode
	// Peers are the peers to measure. nil means every peer this build has
	// (a peer it lacks becomes a note); an empty, non-nil slice means none.
	Peers []string
	// Runs overrides the number of measured runs per column by mode
	// (default DefaultRuns).
	Runs map[Mode]int
	// Warmup is the number of unmeasured runs before a warm column's
	// measured runs (default 1; negative means none).
	Warmup int
	// MemoryMB is every instance's memory limit (default 128).
	MemoryMB int
	// Timeout bounds one run (default 2 minutes).
	Timeout time.Duration
	// Baseline names the column ratios are computed against (default
	// BaselineColumn).
	Baseline string
	// Progress, when not nil, receives a line per run; with ProgressBar it
	// receives a single line redrawn in place instead (for a terminal).
	Progress    io.Writer
	ProgressBar bool
}

func (o Options) withDefaults() Options {
	if len(o.Sandboxes) == 0 {
		o.Sandboxes = []string{"wasm"}
	}
	if len(o.Modes) == 0 {
		o.Modes = DefaultModes
	}
	o.Sandboxes, o.Modes = dedupe(o.Sandboxes), dedupe(o.Modes)
	if o.Peers != nil {
		o.Peers = dedupe(o.Peers)
	}
	if o.Warmup == 0 {
		o.Warmup = 1
	} else if o.Warmup < 0 {
		o.Warmup = 0
	}
	if o.MemoryMB <= 0 {
		o.MemoryMB = 128
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Baseline == "" {
		o.Baseline = BaselineColumn
	}
	return o
}

// dedupe returns s without repeated elements, in order.
func dedupe[T comparable](s []T) []T {
	out := make([]T, 0, len(s))
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func (o Options) runs(m Mode) int {
	if n, ok := o.Runs[m]; ok && n > 0 {
		return n
	}
	return DefaultRuns(m)
}

// columns builds the columns opts selects, and notes about what was left
// out.
func (o Options) columns(env *Env) ([]Column, []string, error) {
	var (
		cols  []Column
		notes []string
		used  = map[Mode]bool{}
	)
	add := func(s Sandbox, m Mode) error {
		c, err := s.New(m, env)
		if err != nil {
			return fmt.Errorf("bench: %s %s: %w", s.Name, m, err)
		}
		cols = append(cols, c)
		return nil
	}
	for _, name := range o.Sandboxes {
		s, ok := lookupSandbox(name)
		if !ok {
			return nil, nil, fmt.Errorf("bench: unknown sandbox %q (have %s)", name, strings.Join(names(false), ", "))
		}
		if s.Peer {
			return nil, nil, fmt.Errorf("bench: %s is a peer, not a sandbox: select it as a peer", name)
		}
		if s.Unavailable != "" {
			return nil, nil, fmt.Errorf("bench: sandbox %s: %s", name, s.Unavailable)
		}
		for _, m := range o.Modes {
			if !slices.Contains(s.Modes, m) {
				notes = append(notes, fmt.Sprintf("%s has no %s mode", s.Name, m))
				continue
			}
			used[m] = true
			if err := add(s, m); err != nil {
				return nil, nil, err
			}
		}
	}
	for _, m := range o.Modes {
		if !used[m] {
			var have []string
			for _, name := range o.Sandboxes {
				s, _ := lookupSandbox(name)
				for _, sm := range s.Modes {
					if !slices.Contains(have, string(sm)) {
						have = append(have, string(sm))
					}
				}
			}
			return nil, nil, fmt.Errorf("bench: unknown mode %q (%s has %s)", m, strings.Join(o.Sandboxes, ", "), strings.Join(have, ", "))
		}
	}
	peers := o.Peers
	if peers == nil {
		peers = names(true)
	} else {
		for _, name := range peers {
			if s, ok := lookupSandbox(name); !ok || !s.Peer {
				return nil, nil, fmt.Errorf("bench: unknown peer %q (have %s)", name, strings.Join(names(true), ", "))
			} else if s.Unavailable != "" {
				return nil, nil, fmt.Errorf("bench: %s column: %s", name, s.Unavailable)
			}
		}
	}
	for _, name := range peers {
		s, _ := lookupSandbox(name)
		if s.Unavailable != "" {
			notes = append(notes, fmt.Sprintf("%s column: %s", name, s.Unavailable))
			continue
		}
		for _, m := range s.Modes {
			if err := add(s, m); err != nil {
				return nil, nil, err
			}
		}
	}
	return cols, notes, nil
}

// names lists the registered sandboxes (peer false) or peers (peer true).
func names(peer bool) []string {
	var out []string
	for _, s := range Sandboxes() {
		if s.Peer == peer {
			out = append(out, s.Name)
		}
	}
	return out
}

// RunError is a run that failed or produced the wrong result.
type RunError struct {
	Workload, Column string
	Run              int // 1-based; warm-up runs count as 0
	Stderr           string
	Err              error
}

func (e *RunError) Error() string {
	run := fmt.Sprintf("run %d", e.Run)
	if e.Run == 0 {
		run = "warm-up run"
	}
	msg := fmt.Sprintf("bench: workload %s, column %s, %s: %v", e.Workload, e.Column, run, e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += "\nstderr: " + s
	}
	return msg
}

func (e *RunError) Unwrap() error { return e.Err }

// Run measures every workload of opts in every column opts selects and
// returns the report. The first failed run ends it with a *RunError.
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts = opts.withDefaults()
	if len(opts.Workloads) == 0 {
		return nil, errors.New("bench: no workloads")
	}
	dir, err := os.MkdirTemp("", "kindling-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: scratch directory: %w", err)
	}
	defer os.RemoveAll(dir)
	env := &Env{Dir: dir, MemoryMB: opts.MemoryMB}
	cols, notes, err := opts.columns(env)
	if err != nil {
		return nil, err
	}
	return runColumns(ctx, opts, cols, notes)
}

// runColumns measures every workload of opts in cols.
func runColumns(ctx context.Context, opts Options, cols []Column, notes []string) (*Report, error) {
	start := time.Now()
	rep := &Report{
		Schema:   Schema,
		Started:  start.UTC(),
		Host:     thisHost(),
		Baseline: opts.Baseline,
		MemoryMB: opts.MemoryMB,
		Notes:    notes,
	}
	for _, c := range cols {
		info := c.Info()
		info.Runs = opts.runs(info.Mode)
		if info.Mode == Warm {
			info.Warmup = opts.Warmup
		}
		rep.Columns = append(rep.Columns, info)
	}
	total := 0
	for _, info := range rep.Columns {
		total += (info.Runs + info.Warmup) * len(opts.Workloads)
	}
	prog := newProgress(opts.Progress, opts.ProgressBar, total)
	defer prog.finish()

	for _, w := range opts.Workloads {
		prog.note(fmt.Sprintf("%s: preparing %d columns", w.Name, len(cols)))
		runners, err := prepareAll(ctx, cols, w)
		if err != nil {
			return nil, err
		}
		res := WorkloadResult{Name: w.Name}
		for i := range cols {
			cell, err := measure(ctx, opts, rep.Columns[i], runners[i], w, prog)
			if err != nil {
				closeAll(runners)
				return nil, err
			}
			res.Cells = append(res.Cells, cell)
		}
		closeAll(runners)
		rep.Workloads = append(rep.Workloads, res)
	}
	rep.finish()
	rep.WallNs = time.Since(start).Nanoseconds()
	return rep, nil
}

// prepareAll prepares w in every column at once: set-up is not measured,
// and compiling for several columns in parallel saves minutes.
func prepareAll(ctx context.Context, cols []Column, w Workload) ([]Runner, error) {
	runners := make([]Runner, len(cols))
	errs := make([]error, len(cols))
	var wg sync.WaitGroup
	for i, c := range cols {
		wg.Go(func() {
			r, err := c.Prepare(ctx, w)
			if err != nil {
				errs[i] = fmt.Errorf("bench: workload %s, column %s: prepare: %w", w.Name, c.Info().Name, err)
				return
			}
			runners[i] = r
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeAll(runners)
		return nil, err
	}
	return runners, nil
}

func closeAll(runners []Runner) {
	for _, r := range runners {
		if r != nil {
			_ = r.Close(context.Background())
		}
	}
}

// measure runs w in one column: the warm-up runs, then the measured ones.
func measure(ctx context.Context, opts Options, info ColumnInfo, r Runner, w Workload, prog *progress) (Cell, error) {
	samples := make([][]phase.Timing, 0, info.Runs)
	for i := -info.Warmup; i < info.Runs; i++ {
		run := i + 1
		if i < 0 {
			run = 0
		}
		// Collect the previous run's garbage outside the measurement.
		runtime.GC()
		rec := phase.NewRecorder()
		var stdout, stderr bytes.Buffer
		rctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		err := r.Run(rctx, &sandbox.Request{
			Stdin:  bytes.NewReader(w.Stdin),
			Stdout: &stdout,
			Stderr: &stderr,
			Phases: rec,
		})
		cancel()
		if err == nil {
			err = checkResult(stdout.Bytes(), w.Expected)
		}
		if err != nil {
			if ctx.Err() != nil {
				return Cell{}, fmt.Errorf("bench: %w", ctx.Err())
			}
			return Cell{}, &RunError{Workload: w.Name, Column: info.Name, Run: run, Stderr: tail(stderr.String(), 2048), Err: err}
		}
		ts := rec.Timings()
		if len(ts) == 0 {
			return Cell{}, &RunError{Workload: w.Name, Column: info.Name, Run: run, Err: errors.New("no phases recorded")}
		}
		if i >= 0 {
			samples = append(samples, ts)
		}
		prog.run(w.Name, info.Name, run, info.Runs, phase.Total(ts))
	}
	return summarize(info.Name, samples), nil
}

func checkResult(stdout []byte, want string) error {
	got, err := workloads.ParseResult(stdout)
	if err != nil {
		return fmt.Errorf("%w (stdout %q)", err, tail(string(stdout), 200))
	}
	if got != want {
		return fmt.Errorf("wrong result %q, want %q", got, want)
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
