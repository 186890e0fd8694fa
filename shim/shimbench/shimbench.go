// Package shimbench measures the cold start of a Kubernetes pod through
// containerd's CRI plugin, step by step, for the kindling shim and for
// runc in the same containerd in the same run: the segmented table of the
// research notes (seed 000) — RunPodSandbox, CreateContainer,
// StartContainer, first output — plus `ctr run --rm` totals and the
// memory each pod's shim costs.
//
// kindling pods run the hello wasm module; runc pods run a static Linux
// hello program; both print the same line, which the benchmark waits for
// in the container's CRI log. Every run is a new pod, so every run starts
// a shim: the cold start of a function with no instance running, on a
// node that has its image (and, for kindling, its compiled module).
package shimbench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-dev/kindling/internal/quantile"
	"github.com/kindling-dev/kindling/shim"
	"github.com/kindling-dev/kindling/shim/containerdtest"
)

// Steps of a pod's cold start, in order.
const (
	StepRunPod       = "RunPodSandbox"
	StepCreate       = "CreateContainer"
	StepStart        = "StartContainer"
	StepFirstOutput  = "first output"    // from StartContainer's return to the output in the log
	StepCRITotal     = "CRI total"       // RunPodSandbox start to StartContainer end (seed 000's total)
	StepOutputTotal  = "to first output" // RunPodSandbox start to the output in the log
	StepCtrRun       = "ctr run --rm"    // a whole `ctr run --rm` of the same image, exec'd
	runcRuntimeType  = "io.containerd.runc.v2"
	defaultRuns      = 10
	containerLogName = "hello.log"
)

// Steps lists the steps of a Row in table order.
var Steps = []string{StepRunPod, StepCreate, StepStart, StepFirstOutput, StepCRITotal, StepOutputTotal, StepCtrRun}

// Runtime is one column of the comparison.
type Runtime struct {
	// Name labels the row ("kindling", "runc").
	Name string
	// Handler is the CRI runtime handler; RuntimeType the containerd
	// runtime type `ctr run --runtime` selects.
	Handler, RuntimeType string
	// Image is what its pods run; it prints containerdtest.Hello.
	Image string
	// ShimBinary names the runtime's shim binary that serves a pod, to find
	// its processes.
	ShimBinary string
}

// DefaultRuntimes are the kindling shim and runc.
var DefaultRuntimes = []Runtime{
	{Name: "kindling", Handler: "kindling", RuntimeType: shim.RuntimeType, Image: containerdtest.HelloWasmImage, ShimBinary: shim.ServerBinaryName},
	{Name: "runc", Handler: "runc", RuntimeType: runcRuntimeType, Image: containerdtest.HelloNativeImage, ShimBinary: "containerd-shim-runc-v2"},
}

// Options configures Run.
type Options struct {
	// Runs per runtime (after one warm-up run each); default 10.
	Runs int
	// Dir is a working directory; default a temporary one, removed after.
	Dir string
	// ShimDir holds prebuilt shim binaries (containerd-shim-kindling-v1 and
	// kindling-shim-server); empty builds them from source.
	ShimDir string
	// Daemon is a running containerdtest daemon to use instead of
	// launching one (it must hold containerdtest's standard images).
	Daemon *containerdtest.Daemon
	// Runtimes to compare; default DefaultRuntimes.
	Runtimes []Runtime
	// Progress, if set, gets a line per run.
	Progress io.Writer
}

// Stat summarizes one step over the runs.
type Stat = quantile.Summary[time.Duration]

// Row is one runtime's results.
type Row struct {
	Runtime string
	Steps   map[string]Stat
	// ShimRSS is the resident memory of the pod's shim process (median),
	// ShimAnon the part of it that is its own (anonymous memory: heap,
	// stacks), not code shared with every other pod's shim. SandboxRSS is
	// the resident memory of the pod's sandbox (pause) process, 0 when
	// the runtime runs none.
	ShimRSS, ShimAnon, SandboxRSS uint64
}

// Table is a benchmark's result.
type Table struct {
	Runs  int
	Rows  []Row
	Notes []string
}

// Run launches containerd (unless Options.Daemon is set) and measures
// every runtime, interleaving their runs so that noise hits both alike.
func Run(ctx context.Context, opts Options) (Table, error) {
	if opts.Runs <= 0 {
		opts.Runs = defaultRuns
	}
	if opts.Runtimes == nil {
		opts.Runtimes = DefaultRuntimes
	}
	d := opts.Daemon
	if d == nil {
		dir := opts.Dir
		if dir == "" {
			tmp, err := os.MkdirTemp("", "kindling-shimbench-")
			if err != nil {
				return Table{}, err
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
		var err error
		d, err = containerdtest.Launch(ctx, containerdtest.Options{Dir: dir, ShimDir: opts.ShimDir})
		if err != nil {
			return Table{}, fmt.Errorf("shimbench: %w", err)
		}
		defer d.Close()
	}
	c, err := d.CRI()
	if err != nil {
		return Table{}, err
	}
	defer c.Close()
	logRoot, err := os.MkdirTemp("", "kindling-shimbench-logs-")
	if err != nil {
		return Table{}, err
	}
	defer os.RemoveAll(logRoot)

	samples := make([]map[string][]time.Duration, len(opts.Runtimes))
	shimRSS := make([][]uint64, len(opts.Runtimes))
	shimAnon := make([][]uint64, len(opts.Runtimes))
	sandboxRSS := make([][]uint64, len(opts.Runtimes))
	ctrLost := make([]int, len(opts.Runtimes))
	for i := range samples {
		samples[i] = map[string][]time.Duration{}
	}
	for run := -1; run < opts.Runs; run++ { // run -1 warms up
		for i, rt := range opts.Runtimes {
			m, err := podColdStart(ctx, d, c, rt, filepath.Join(logRoot, fmt.Sprintf("%s-%d", rt.Name, run+1)))
			if err != nil {
				return Table{}, fmt.Errorf("shimbench: %s pod, run %d: %w", rt.Name, run+1, err)
			}
			ctrRun, lost, err := ctrRunOnce(ctx, d, rt, run+1)
			ctrLost[i] += lost
			if err != nil {
				return Table{}, fmt.Errorf("shimbench: %s ctr run, run %d: %w", rt.Name, run+1, err)
			}
			if run < 0 {
				continue
			}
			for step, v := range m.steps {
				samples[i][step] = append(samples[i][step], v)
			}
			samples[i][StepCtrRun] = append(samples[i][StepCtrRun], ctrRun)
			shimRSS[i] = append(shimRSS[i], m.shimRSS)
			shimAnon[i] = append(shimAnon[i], m.shimAnon)
			sandboxRSS[i] = append(sandboxRSS[i], m.sandboxRSS)
			if opts.Progress != nil {
				fmt.Fprintf(opts.Progress, "%-9s run %2d: CRI %6.1f ms, first output %6.1f ms, ctr run %6.1f ms\n", rt.Name, run+1,
					ms(m.steps[StepCRITotal]), ms(m.steps[StepOutputTotal]), ms(ctrRun))
			}
		}
	}
	t := Table{Runs: opts.Runs}
	for i, rt := range opts.Runtimes {
		row := Row{Runtime: rt.Name, Steps: map[string]Stat{}, ShimRSS: quantile.Summarize(shimRSS[i]).Median, ShimAnon: quantile.Summarize(shimAnon[i]).Median, SandboxRSS: quantile.Summarize(sandboxRSS[i]).Median}
		for step, v := range samples[i] {
			row.Steps[step] = quantile.Summarize(v)
		}
		t.Rows = append(t.Rows, row)
	}
	for i, rt := range opts.Runtimes {
		if ctrLost[i] > 0 {
			t.Notes = append(t.Notes, fmt.Sprintf("ctr run with %s printed nothing %d times (ctr's output race); those runs were repeated", rt.Name, ctrLost[i]))
		}
	}
	if k, r := t.row("kindling"), t.row("runc"); k != nil && r != nil {
		kt, rt := k.Steps[StepCRITotal].Median, r.Steps[StepCRITotal].Median
		if kt > 0 {
			t.Notes = append(t.Notes, fmt.Sprintf("CRI cold start: kindling %.1f ms vs runc %.1f ms (%.2fx faster)", ms(kt), ms(rt), float64(rt)/float64(kt)))
		}
	}
	return t, nil
}

func (t Table) row(name string) *Row {
	for i := range t.Rows {
		if t.Rows[i].Runtime == name {
			return &t.Rows[i]
		}
	}
	return nil
}

// measurement is one pod's cold start.
type measurement struct {
	steps                         map[string]time.Duration
	shimRSS, shimAnon, sandboxRSS uint64
}

// podColdStart runs one pod of rt with one container and measures each
// CRI step, then tears the pod down (untimed).
func podColdStart(ctx context.Context, d *containerdtest.Daemon, c *containerdtest.CRI, rt Runtime, logDir string) (m measurement, err error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return m, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	podConfig := containerdtest.PodConfig("bench-"+rt.Name, strconv.FormatInt(time.Now().UnixNano(), 36), logDir)
	m.steps = map[string]time.Duration{}

	t0 := time.Now()
	pod, err := c.Runtime.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: podConfig, RuntimeHandler: rt.Handler})
	if err != nil {
		return m, fmt.Errorf("RunPodSandbox: %w", err)
	}
	t1 := time.Now()
	defer func() {
		if rerr := removePod(context.WithoutCancel(ctx), c, pod.PodSandboxId); rerr != nil && err == nil {
			err = rerr
		}
	}()
	created, err := c.Runtime.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId:  pod.PodSandboxId,
		Config:        containerdtest.ContainerConfig("hello", rt.Image, containerLogName),
		SandboxConfig: podConfig,
	})
	if err != nil {
		return m, fmt.Errorf("CreateContainer: %w", err)
	}
	t2 := time.Now()
	if _, err := c.Runtime.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		return m, fmt.Errorf("StartContainer: %w", err)
	}
	t3 := time.Now()
	if _, err := containerdtest.WaitLog(ctx, filepath.Join(logDir, containerLogName), containerdtest.Hello); err != nil {
		return m, err
	}
	t4 := time.Now()
	m.steps[StepRunPod] = t1.Sub(t0)
	m.steps[StepCreate] = t2.Sub(t1)
	m.steps[StepStart] = t3.Sub(t2)
	m.steps[StepFirstOutput] = t4.Sub(t3)
	m.steps[StepCRITotal] = t3.Sub(t0)
	m.steps[StepOutputTotal] = t4.Sub(t0)

	pids, err := containerdtest.ShimPIDs(d.Address, rt.ShimBinary)
	if err != nil {
		return m, err
	}
	for _, pid := range pids {
		if hasArg(pid, "-id", pod.PodSandboxId) {
			m.shimRSS = memory(pid, "status", "VmRSS:")
			m.shimAnon = memory(pid, "smaps_rollup", "Anonymous:")
			for _, child := range children(pid) {
				m.sandboxRSS += memory(child, "status", "VmRSS:")
			}
		}
	}
	if _, err := c.WaitExited(ctx, created.ContainerId); err != nil {
		return m, err
	}
	if _, err := c.Runtime.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: created.ContainerId}); err != nil {
		return m, fmt.Errorf("RemoveContainer: %w", err)
	}
	return m, nil
}

func removePod(ctx context.Context, c *containerdtest.CRI, id string) error {
	if _, err := c.Runtime.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("StopPodSandbox: %w", err)
	}
	if _, err := c.Runtime.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("RemovePodSandbox: %w", err)
	}
	return nil
}

// ctrRunOnce times a whole `ctr run --rm` of the runtime's image. A run
// whose output ctr lost is repeated (see containerdtest.CtrLostMax) and
// counted in lost.
func ctrRunOnce(ctx context.Context, d *containerdtest.Daemon, rt Runtime, run int) (elapsed time.Duration, lost int, err error) {
	for attempt := 0; ; attempt++ {
		id := fmt.Sprintf("bench-ctr-%s-%d-%d-%d", rt.Name, run, attempt, time.Now().UnixNano()%1e6)
		cmd := exec.CommandContext(ctx, "ctr", "--address", d.Address, "run", "--rm", "--runtime", rt.RuntimeType, rt.Image, id)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return 0, lost, fmt.Errorf("%v: %s", err, stderr.String())
		}
		elapsed = time.Since(start)
		switch out := stdout.String(); {
		case out == containerdtest.Hello:
			return elapsed, lost, nil
		case out == "" && lost < containerdtest.CtrLostMax:
			lost++
		default:
			return 0, lost, fmt.Errorf("ctr run printed %q, want %q (%d earlier runs printed nothing)", out, containerdtest.Hello, lost)
		}
	}
}

func hasArg(pid int, flag, value string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), "\x00"+flag+"\x00"+value+"\x00")
}

// memory reads a "Field:   N kB" line of /proc/PID/file, in bytes (0 if
// the process is gone).
func memory(pid int, file, field string) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces; split after ')'.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 1 && f[1] == strconv.Itoa(pid) {
				out = append(out, p)
			}
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// WriteText writes the table: one column per runtime, one row per step
// (median, with the 90th percentile in parentheses), then memory.
func (t Table) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "CRI cold start, %d runs per runtime (median, p90 in parentheses), ms\n", t.Runs)
	fmt.Fprintf(&b, "%-18s", "step")
	for _, r := range t.Rows {
		fmt.Fprintf(&b, "  %-18s", r.Runtime)
	}
	b.WriteString("\n")
	for _, step := range Steps {
		fmt.Fprintf(&b, "%-18s", step)
		for _, r := range t.Rows {
			s := r.Steps[step]
			fmt.Fprintf(&b, "  %-18s", fmt.Sprintf("%.1f (%.1f)", ms(s.Median), ms(s.P90)))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "%-18s", "shim RSS, MiB")
	for _, r := range t.Rows {
		fmt.Fprintf(&b, "  %-18s", fmt.Sprintf("%.1f", float64(r.ShimRSS)/(1<<20)))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "%-18s", "shim anon, MiB")
	for _, r := range t.Rows {
		fmt.Fprintf(&b, "  %-18s", fmt.Sprintf("%.1f", float64(r.ShimAnon)/(1<<20)))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "%-18s", "sandbox RSS, MiB")
	for _, r := range t.Rows {
		fmt.Fprintf(&b, "  %-18s", fmt.Sprintf("%.1f", float64(r.SandboxRSS)/(1<<20)))
	}
	b.WriteString("\n")
	for _, n := range t.Notes {
		b.WriteString(n + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
