package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-dev/kindling/bench"
)

func newBench(g *globals) *cobra.Command {
	var (
		workloadList, jsonOut, htmlOut, buildDir string
		sandboxes, modes, peers, modeRuns        []string
		runs, coldRuns, memory                   int
		timeout                                  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure cold starts phase by phase, every sandbox mode side by side with peer engines",
		Long: `Runs the benchmark workloads in each sandbox mode and peer engine, several
times each, and prints a table per workload: a row per phase, a column per
sandbox mode or peer, each cell the median (p90) over the runs, with every
column's total as a ratio to the steady state (wasm warm). Every run checks
the workload's result.

Modes: cold (a new driver, nothing compiled), cached (a new driver whose
on-disk compilation cache holds the module, as after a restart), warm (the
module prepared once, a fresh instance per run). Peers: floor (bare wazero)
and wasmtime (in builds with -tags wasmtime).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			stderr := cmd.ErrOrStderr()
			var err error
			ociMemory := 0 // the oci table's own default
			if cmd.Flags().Changed("memory") {
				ociMemory = memory
			}
			if sandboxes, err = benchOthers(cmd, sandboxes, strings.Split(workloadList, ","), runs, ociMemory); err != nil {
				return err
			}
			if len(sandboxes) == 0 {
				return nil // only shim or microvm tables were asked for
			}
			opts := bench.Options{
				Sandboxes:   sandboxes,
				Runs:        map[bench.Mode]int{bench.Cold: coldRuns, bench.Warm: runs},
				MemoryMB:    memory,
				Timeout:     timeout,
				Progress:    stderr,
				ProgressBar: isTerminal(stderr),
			}
			for _, m := range modes {
				opts.Modes = append(opts.Modes, bench.Mode(m))
			}
			if cmd.Flags().Changed("peers") {
				opts.Peers = []string{}
				for _, p := range peers {
					if p != "none" {
						opts.Peers = append(opts.Peers, p)
					}
				}
			}
			for _, kv := range modeRuns {
				m, n, ok := strings.Cut(kv, "=")
				count, err := strconv.Atoi(n)
				if !ok || err != nil || count <= 0 {
					return fmt.Errorf("--mode-runs %q: want MODE=N with N > 0", kv)
				}
				opts.Runs[bench.Mode(m)] = count
			}
			var names []string
			if workloadList != "all" {
				names = strings.Split(workloadList, ",")
			}
			targets, err := bench.Targets(opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "bench: building workloads into %s\n", buildDir)
			if opts.Workloads, err = bench.BuildSuite(ctx, buildDir, targets, names...); err != nil {
				return err
			}
			rep, err := bench.Run(ctx, opts)
			if err != nil {
				return err
			}
			if err := rep.WriteText(cmd.OutOrStdout()); err != nil {
				return err
			}
			if err := writeReport(jsonOut, rep.WriteJSON, stderr); err != nil {
				return err
			}
			return writeReport(htmlOut, rep.WriteHTML, stderr)
		},
	}
	f := cmd.Flags()
	var known []string
	for _, s := range bench.Sandboxes() {
		if s.Peer {
			known = append(known, s.Name)
		}
	}
	f.StringVar(&workloadList, "workloads", "all", "workloads to run: all, or a comma-separated list")
	f.StringSliceVar(&sandboxes, "sandbox", []string{"wasm"}, "sandboxes to measure: wasm; shim (the CRI table: kindling shim vs runc in a private containerd); microvm (cold boot vs template restore vs prefetch); oci (kindling's container cold start on runc and crun vs bare runc run, crun run and ctr run --rm, and its warm invoke; needs root; default workloads hello-world,json)")
	f.StringSliceVar(&modes, "modes", []string{string(bench.Cold), string(bench.Cached), string(bench.Warm)}, "modes to measure each sandbox in")
	f.StringSliceVar(&peers, "peers", nil, "peer engines to compare with, or none (default: every peer of this build; known: "+strings.Join(known, ", ")+")")
	f.IntVar(&runs, "runs", bench.DefaultRuns(bench.Warm), "measured runs per workload of warm columns and peers")
	f.IntVar(&coldRuns, "cold-runs", bench.DefaultRuns(bench.Cold), "measured runs per workload of cold columns")
	f.StringSliceVar(&modeRuns, "mode-runs", nil, fmt.Sprintf("measured runs of other modes, MODE=N (default cached=%d)", bench.DefaultRuns(bench.Cached)))
	f.StringVar(&jsonOut, "json", "", "also write the report as JSON to `FILE`")
	f.StringVar(&htmlOut, "html", "", "also write the report as a self-contained HTML page to `FILE`")
	f.StringVar(&buildDir, "build-dir", defaultBenchBuildDir(), "`DIR` for the built workloads, reused while their sources are unchanged")
	f.IntVar(&memory, "memory", 128, "memory limit of every instance, MiB (oci: of every container, default 1024, which also sets its CPU quota)")
	f.DurationVar(&timeout, "timeout", 2*time.Minute, "limit of one run")
	return cmd
}

// writeReport writes a report with write to path, if path is set.
func writeReport(path string, write func(io.Writer) error, log io.Writer) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(log, "bench: wrote %s\n", path)
	return nil
}

// defaultBenchBuildDir is $XDG_CACHE_HOME/kindling/bench/workloads (or the
// platform's cache directory).
func defaultBenchBuildDir() string {
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "kindling", "bench", "workloads")
	}
	return filepath.Join(os.TempDir(), "kindling-bench-workloads")
}

// isTerminal reports whether w is a terminal, for a progress bar.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
