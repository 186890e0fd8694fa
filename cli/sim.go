package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-dev/kindling/scheduler"
	"github.com/kindling-dev/kindling/scheduler/sim"
	"github.com/kindling-dev/kindling/trace"
)

func newSim() *cobra.Command {
	var (
		azure2019, azure2021 string
		synthetic            int
		synthLength          time.Duration
		policies             string
		cfg                  sim.Config
		minutes              int
		seed                 uint64
	)
	cmd := &cobra.Command{
		Use:   "sim (--azure2019 DIR | --azure2021 FILE | --synthetic N) [--policies fixed,none,hybrid]",
		Short: "Replay an invocation trace through the scheduler on a virtual clock, one row per keep-alive policy",
		Long: `sim replays a trace through the very scheduler and keep-alive policies the
daemon uses, on a virtual clock, and compares the policies: cold-start rate,
latency added by cold starts and queueing, idle memory (GB-seconds kept warm
but unused), peak memory and instances started.

Traces: the Azure Functions 2019 layout (a directory with invocations.csv,
durations.csv, memory.csv), the 2021 per-invocation CSV, or a synthetic
bursty trace of N functions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var invs []trace.Invocation
			var err error
			switch {
			case azure2019 != "":
				invs, err = trace.LoadAzure2019(azure2019, trace.Azure2019Options{Seed: seed, Minutes: minutes})
			case azure2021 != "":
				invs, err = trace.LoadAzure2021(azure2021, trace.Azure2021Options{})
			case synthetic > 0:
				invs, err = trace.Synthetic(trace.SyntheticConfig{Seed: seed, Functions: synthetic, Length: synthLength})
			default:
				return errors.New("choose a trace: --azure2019 DIR, --azure2021 FILE or --synthetic N")
			}
			if err != nil {
				return err
			}
			var ps []scheduler.Policy
			for _, name := range strings.Split(policies, ",") {
				p, err := scheduler.ParsePolicy(strings.TrimSpace(name))
				if err != nil {
					return fmt.Errorf("--policies: %w", err)
				}
				ps = append(ps, p)
			}
			errw := cmd.ErrOrStderr()
			sum := trace.Summarize(invs)
			fmt.Fprintf(errw, "trace: %+v\n", sum)
			cfg.Progress = func(p sim.Progress) {
				fmt.Fprintf(errw, "\r%-24s %6.1f%%  virtual %v   ", p.Policy, 100*float64(p.Done)/float64(max(p.Total, 1)), p.Virtual.Truncate(time.Second))
				if p.Done == p.Total {
					fmt.Fprintln(errw)
				}
			}
			start := time.Now()
			results, err := sim.Run(cmd.Context(), invs, cfg, ps...)
			if err != nil {
				return err
			}
			fmt.Fprintf(errw, "replayed %d invocations under %d policies in %v\n", len(invs), len(ps), time.Since(start).Round(time.Millisecond))
			return sim.WriteTable(cmd.OutOrStdout(), results)
		},
	}
	f := cmd.Flags()
	f.StringVar(&azure2019, "azure2019", "", "directory of an Azure Functions 2019 trace (invocations.csv, durations.csv, memory.csv)")
	f.StringVar(&azure2021, "azure2021", "", "an Azure Functions 2021 per-invocation trace (CSV)")
	f.IntVar(&synthetic, "synthetic", 0, "generate a bursty synthetic trace of N functions")
	f.DurationVar(&synthLength, "length", time.Hour, "length of the synthetic trace")
	f.IntVar(&minutes, "minutes", 0, "replay only the first N minutes of an Azure 2019 trace")
	f.Uint64Var(&seed, "seed", 1, "seed for spreading per-minute counts and for synthetic traces")
	f.StringVar(&policies, "policies", "fixed,none,hybrid", "keep-alive policies to compare (fixed, fixed:5m, none, hybrid, hybrid:fallback=10m, …)")
	f.DurationVar(&cfg.StartCost, "start-cost", 100*time.Millisecond, "virtual time a cold start takes (measure it with kindling bench)")
	f.IntVar(&cfg.MemoryBudgetMB, "memory-budget", 0, "node memory in MiB (0: unlimited)")
	return cmd
}
