package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-dev/kindling/client"
	"github.com/kindling-dev/kindling/phase"
)

// The vm and snapshot verbs drive the microvm sandbox's VM and snapshot
// API (/v1/vms, /v1/snapshots) of a daemon started with --microvm: the
// FaaSnap and REAP experiments from the command line.

func newVM(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Boot, invoke and snapshot microVMs (daemon started with --microvm)"}
	cmd.AddCommand(newVMCreate(g), newVMList(g), newVMGet(g), newVMRemove(g), newVMInvoke(g), newVMSnapshot(g))
	return cmd
}

func newSnapshotCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Inspect, copy, restore microVM snapshots and edit their page sets"}
	cmd.AddCommand(newSnapshotList(g), newSnapshotGet(g), newSnapshotRemove(g), newSnapshotCopy(g),
		newSnapshotDropCache(g), newPageSetCmd(g, client.LoadingSet), newPageSetCmd(g, client.WorkingSet),
		newSnapshotInvoke(g))
	return cmd
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newVMCreate(g *globals) *cobra.Command {
	var cfg client.VMConfig
	cmd := &cobra.Command{
		Use:   "create --function NAME | --snapshot ID",
		Short: "Boot a VM for a deployed microvm function, or restore one from a snapshot; print its ID",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (cfg.Function == "") == (cfg.Snapshot == "") {
				return errors.New("one of --function NAME or --snapshot ID is required")
			}
			info, err := g.client().CreateVM(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), info.ID)
			from := "function " + info.Function
			if info.Snapshot != "" {
				from = "snapshot " + info.Snapshot
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created vm %s from %s (%d MiB, %s, pid %d) in %s\n",
				info.ID, from, info.MemoryMB, info.Accel, info.PID, fmtDur(phase.Total(info.Start)))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", "", "the VM's ID (default: generated)")
	f.StringVar(&cfg.Function, "function", "", "boot a VM for this deployed function (runtime microvm)")
	f.StringVar(&cfg.Snapshot, "snapshot", "", "restore the VM from this snapshot")
	f.IntVar(&cfg.MemoryMB, "memory", 0, "a booted VM's memory in MiB (default: the function's)")
	f.StringVar((*string)(&cfg.Prefetch), "prefetch", "", "how a restore prefetches: none, loading-set or working-set")
	return cmd
}

func newVMList(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List VMs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			vms, err := g.client().VMs(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), vms)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tFUNCTION\tSNAPSHOT\tMEMORY\tPID\tINVOCATIONS\tCREATED")
			for _, v := range vms {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%dMiB\t%d\t%d\t%s\n", v.ID, v.State, dash(v.Function), dash(v.Snapshot),
					v.MemoryMB, v.PID, v.Invocations, v.Created.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the list as JSON")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newVMGet(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Print a VM (state, pid, start phases, invocations) as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			info, err := g.client().VM(cmd.Context(), pos[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), info)
		},
	}
}

func newVMRemove(g *globals) *cobra.Command {
	return newDeleteCommand("rm ID...", "Destroy VMs", "vm ", func(ctx context.Context, id string) error {
		return g.client().DeleteVM(ctx, id)
	})
}

// invokeFlags are the flags of both invoke verbs.
type invokeFlags struct {
	data      string
	env, args []string
	timeout   time.Duration
	verbose   bool
}

func (o *invokeFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&o.data, "data", "d", "", "the function's stdin: a literal, @FILE, or - for stdin")
	f.StringArrayVar(&o.env, "env", nil, "environment variable KEY=VALUE (repeatable)")
	f.StringArrayVar(&o.args, "arg", nil, "argument passed to the function (repeatable)")
	f.DurationVar(&o.timeout, "timeout", 0, "invocation timeout (default 30s)")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "print the phase table on stderr")
}

func (o *invokeFlags) request(g *globals) (client.VMInvokeRequest, error) {
	r, err := readData(g, o.data)
	if err != nil {
		return client.VMInvokeRequest{}, err
	}
	stdin, err := io.ReadAll(r)
	if err != nil {
		return client.VMInvokeRequest{}, fmt.Errorf("--data: %w", err)
	}
	for _, kv := range o.env {
		if !strings.Contains(kv, "=") {
			return client.VMInvokeRequest{}, fmt.Errorf("--env %q: want KEY=VALUE", kv)
		}
	}
	return client.VMInvokeRequest{Stdin: stdin, Env: o.env, Args: o.args, TimeoutMs: int(o.timeout / time.Millisecond)}, nil
}

// finish prints an invocation's result: the function's stdout on stdout,
// its stderr (or, for a failure, the stderr tail) on stderr.
func (o *invokeFlags) finish(cmd *cobra.Command, res *client.VMInvokeResult, err error) error {
	stderr := cmd.ErrOrStderr()
	if o.verbose && res != nil {
		vm := res.VM
		if vm == "" {
			vm = "(deleted)"
		}
		fmt.Fprintf(stderr, "vm %s  exit code %d\n", vm, res.ExitCode)
		printPhaseTable(stderr, res.Phases)
	}
	if err != nil {
		var ce *client.Error
		if errors.As(err, &ce) && ce.Info.StderrTail != "" {
			fmt.Fprintf(stderr, "--- function stderr (tail) ---\n%s", ce.Info.StderrTail)
			if !strings.HasSuffix(ce.Info.StderrTail, "\n") {
				fmt.Fprintln(stderr)
			}
		}
		return err
	}
	stderr.Write(res.Stderr)
	_, err = cmd.OutOrStdout().Write(res.Stdout)
	return err
}

func printPhaseTable(w io.Writer, ts []phase.Timing) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tduration\tdetail\t")
	for _, p := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", p.Name, fmtDur(p.Duration), p.Detail)
	}
	fmt.Fprintf(tw, "total\t%s\t\t\n", fmtDur(phase.Total(ts)))
	tw.Flush()
}

func newVMInvoke(g *globals) *cobra.Command {
	var o invokeFlags
	cmd := &cobra.Command{
		Use:   "invoke ID [-d DATA]",
		Short: "Run one invocation in a running VM and print the function's stdout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			req, err := o.request(g)
			if err != nil {
				return err
			}
			res, err := g.client().InvokeVM(cmd.Context(), pos[0], req)
			return o.finish(cmd, res, err)
		},
	}
	o.add(cmd)
	return cmd
}

func newVMSnapshot(g *globals) *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "snapshot VM [--id SNAPSHOT]",
		Short: "Save a booted VM as a snapshot (the VM ends); print the snapshot's ID",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			info, err := g.client().SnapshotVM(cmd.Context(), pos[0], id)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), info.ID)
			fmt.Fprintf(cmd.ErrOrStderr(), "snapshot %s of vm %s: %d MiB of memory, %d bytes of device state\n",
				info.ID, pos[0], info.MemoryMB, info.StateBytes)
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "the snapshot's ID (default: generated)")
	return cmd
}

func newSnapshotList(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List snapshots (function templates included)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			snaps, err := g.client().Snapshots(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), snaps)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tFUNCTION\tMEMORY\tACCEL\tCACHED\tLOADING SET\tWORKING SET\tTEMPLATE\tCREATED")
			for _, s := range snaps {
				fmt.Fprintf(tw, "%s\t%s\t%dMiB\t%s\t%.1fMiB\t%d\t%d\t%v\t%s\n", s.ID, dash(s.Function), s.MemoryMB, s.Accel,
					float64(s.CachedBytes)/(1<<20), s.LoadingSetPages, s.WorkingSetPages, s.Template, s.Created.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the list as JSON")
	return cmd
}

func newSnapshotGet(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Print a snapshot (sizes, bytes in the page cache, page-set sizes) as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			info, err := g.client().Snapshot(cmd.Context(), pos[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), info)
		},
	}
}

func newSnapshotRemove(g *globals) *cobra.Command {
	return newDeleteCommand("rm ID...", "Delete snapshots (VMs restored from them keep running)", "snapshot ", func(ctx context.Context, id string) error {
		return g.client().DeleteSnapshot(ctx, id)
	})
}

func newSnapshotCopy(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "copy SRC [DST]",
		Short: "Copy a snapshot with its page sets; print the copy's ID",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, pos []string) error {
			dst := ""
			if len(pos) == 2 {
				dst = pos[1]
			}
			info, err := g.client().CopySnapshot(cmd.Context(), pos[0], dst)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), info.ID)
			return nil
		},
	}
}

func newSnapshotDropCache(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "drop-cache ID...",
		Short: "Evict snapshots' files from the host's page cache (the next restore reads from disk)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			for _, id := range pos {
				info, err := g.client().DropSnapshotCache(cmd.Context(), id)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "dropped the page cache of snapshot %s (%.1f MiB still cached)\n",
					id, float64(info.CachedBytes)/(1<<20))
			}
			return nil
		},
	}
}

func newPageSetCmd(g *globals, kind client.PageSetKind) *cobra.Command {
	var set, merge string
	cmd := &cobra.Command{
		Use:   string(kind) + " ID [--set FILE | --merge FILE]",
		Short: "Print a snapshot's " + strings.ReplaceAll(string(kind), "-", " ") + " as JSON, replace it (--set) or add pages to it (--merge)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			c, id := g.client(), pos[0]
			if set != "" && merge != "" {
				return errors.New("--set and --merge exclude each other")
			}
			if set == "" && merge == "" {
				ps, err := c.PageSet(cmd.Context(), id, kind)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), ps)
			}
			file, put := merge, c.MergePageSet
			if set != "" {
				file, put = set, c.PutPageSet
			}
			in, err := readPageSet(g, file)
			if err != nil {
				return err
			}
			ps, err := put(cmd.Context(), id, kind, in)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s of snapshot %s: %d pages in %d extents\n", kind, id, ps.Pages(), len(ps.Extents))
			return nil
		},
	}
	cmd.Flags().StringVar(&set, "set", "", "replace the set with the one in this JSON `FILE` (- for stdin; an empty set removes it)")
	cmd.Flags().StringVar(&merge, "merge", "", "add the pages of the set in this JSON `FILE` (- for stdin)")
	return cmd
}

// readPageSet reads a page set as JSON from a file, or stdin for "-".
func readPageSet(g *globals, file string) (client.PageSet, error) {
	var r io.Reader = g.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return client.PageSet{}, err
		}
		defer f.Close()
		r = f
	}
	var ps client.PageSet
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ps); err != nil {
		return client.PageSet{}, fmt.Errorf("page set %s: %w", file, err)
	}
	return ps, nil
}

func newSnapshotInvoke(g *globals) *cobra.Command {
	var (
		o    invokeFlags
		opts client.RestoreOptions
	)
	cmd := &cobra.Command{
		Use:   "invoke ID [-d DATA] [--prefetch MODE] [--drop-cache] [--record-loading-set] [--record-working-set] [--keep]",
		Short: "Restore a VM from a snapshot, run one invocation in it and delete it (unless --keep)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			req, err := o.request(g)
			if err != nil {
				return err
			}
			res, err := g.client().InvokeSnapshot(cmd.Context(), pos[0], req, opts)
			if err == nil && opts.Keep {
				fmt.Fprintf(cmd.ErrOrStderr(), "kept vm %s\n", res.VM)
			}
			return o.finish(cmd, res, err)
		},
	}
	o.add(cmd)
	f := cmd.Flags()
	f.StringVar((*string)(&opts.Prefetch), "prefetch", "", "none, loading-set (FaaSnap) or working-set (REAP)")
	f.BoolVar(&opts.DropCache, "drop-cache", false, "evict the snapshot from the page cache first (a restore from disk)")
	f.BoolVar(&opts.RecordLoadingSet, "record-loading-set", false, "record the snapshot's loading set during this invocation (use with --drop-cache)")
	f.BoolVar(&opts.RecordWorkingSet, "record-working-set", false, "record the snapshot's working set during this invocation")
	f.BoolVar(&opts.Keep, "keep", false, "leave the VM running after the invocation")
	return cmd
}
