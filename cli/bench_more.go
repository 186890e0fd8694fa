package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"

	"github.com/kindling-dev/kindling/sandbox/microvm"
	"github.com/kindling-dev/kindling/sandbox/oci"
	"github.com/kindling-dev/kindling/sandbox/oci/ocibench"
	"github.com/kindling-dev/kindling/shim/shimbench"
)

// benchOthers runs the benchmarks whose tables have a shape of their own:
// the CRI table of the containerd shim (seed 000), the microVM's boot vs
// restore vs prefetch table and the oci sandbox's cold start beside bare
// runc, crun and ctr (ociMemory MiB a container; 0, its default). It
// returns the sandboxes it did not handle.
func benchOthers(cmd *cobra.Command, sandboxes, workloads []string, runs, ociMemory int) ([]string, error) {
	var rest []string
	out, progress := cmd.OutOrStdout(), cmd.ErrOrStderr()
	for _, sb := range sandboxes {
		switch sb {
		case "shim":
			fmt.Fprintln(progress, "shim: starting a private containerd; kindling shim vs runc, CRI RunPodSandbox → StartContainer → first output")
			t, err := shimbench.Run(cmd.Context(), shimbench.Options{Runs: runs})
			if err != nil {
				return nil, fmt.Errorf("bench shim: %w", err)
			}
			if err := t.WriteText(out); err != nil {
				return nil, err
			}
		case microvm.RuntimeName:
			dir, err := os.MkdirTemp("", "kindling-bench-microvm-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			names := slices.DeleteFunc(slices.Clone(workloads), func(w string) bool { return w == "all" })
			ws, err := microvm.BuildBenchWorkloads(cmd.Context(), filepath.Join(dir, "build"), names...)
			if err != nil {
				return nil, fmt.Errorf("bench microvm: %w", err)
			}
			t, err := microvm.Bench(cmd.Context(), microvm.BenchOptions{
				Config: microvm.Config{Root: filepath.Join(dir, "root")}, Workloads: ws, Runs: runs, Progress: progress})
			if err != nil {
				return nil, fmt.Errorf("bench microvm: %w", err)
			}
			if err := t.Format(out); err != nil {
				return nil, err
			}
		case oci.RuntimeName:
			fmt.Fprintln(progress, "oci: kindling oci (runc, crun) vs bare runc/crun run vs ctr run --rm in a private containerd, same image and command")
			names := slices.DeleteFunc(slices.Clone(workloads), func(w string) bool { return w == "all" })
			t, err := ocibench.Run(cmd.Context(), ocibench.Options{Runs: runs, Names: names, Progress: progress, MemoryMB: ociMemory})
			if err != nil {
				return nil, fmt.Errorf("bench oci: %w", err)
			}
			if err := t.WriteText(out); err != nil {
				return nil, err
			}
		default:
			rest = append(rest, sb)
		}
	}
	if len(rest) == 0 && len(sandboxes) > 0 {
		return nil, nil
	}
	return rest, nil
}
