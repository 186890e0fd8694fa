package cli

import (
	"bytes"
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

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/client"
	"github.com/kindling-dev/kindling/manifest"
	"github.com/kindling-dev/kindling/phase"
)

func newDeploy(g *globals) *cobra.Command {
	var (
		file, wasmPath, runtime string
		imageRef                string
		memory                  int
		timeout                 time.Duration
		env, args               []string
		sched                   api.FunctionSpec // scheduling fields only
	)
	cmd := &cobra.Command{
		Use:   "deploy NAME --wasm FILE | deploy -f kindling.yaml",
		Short: "Deploy a function, or every function of a manifest",
		RunE: func(cmd *cobra.Command, pos []string) error {
			c := g.client()
			out := cmd.OutOrStdout()
			if file != "" {
				if len(pos) > 0 {
					return errors.New("deploy -f takes no NAME")
				}
				m, err := manifest.Load(file)
				if err != nil {
					return err
				}
				for _, f := range m.Functions {
					fn, err := deployFile(cmd, c, f.Name, m.ArtifactPath(f), func(d string) api.FunctionSpec { return f.Spec(d) })
					if err != nil {
						return fmt.Errorf("function %q: %w", f.Name, err)
					}
					fmt.Fprintf(out, "deployed %s (version %d, %s)\n", fn.Name, fn.Version, fn.Artifact)
				}
				return nil
			}
			if len(pos) != 1 {
				return errors.New("usage: kindling deploy NAME --wasm FILE | --image NAME:TAG (or -f kindling.yaml)")
			}
			if (wasmPath == "") == (imageRef == "") {
				return errors.New("one of --wasm FILE or --image NAME:TAG is required")
			}
			envMap := map[string]string{}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
				envMap[k] = v
			}
			spec := func(d string) api.FunctionSpec {
				return api.FunctionSpec{Runtime: runtime, Artifact: d, MemoryMB: memory,
					TimeoutMs: int(timeout / time.Millisecond), Env: envMap, Args: args,
					KeepAlive: sched.KeepAlive, MinInstances: sched.MinInstances, MaxInstances: sched.MaxInstances,
					QueueSize: sched.QueueSize, Concurrency: sched.Concurrency}
			}
			var fn api.Function
			var err error
			if imageRef != "" {
				s := spec("")
				s.Image = imageRef
				if !cmd.Flags().Changed("runtime") {
					s.Runtime = "oci"
				}
				fn, err = c.Deploy(cmd.Context(), pos[0], s)
			} else {
				fn, err = deployFile(cmd, c, pos[0], wasmPath, spec)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "deployed %s (version %d, %s)\n", fn.Name, fn.Version, fn.Artifact)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "deploy every function of this manifest")
	f.StringVar(&wasmPath, "wasm", "", "the function's WebAssembly module")
	f.StringVar(&imageRef, "image", "", "an imported container image (name:tag) to run in the oci sandbox")
	f.StringVar(&runtime, "runtime", "wasm", "sandbox runtime")
	f.IntVar(&memory, "memory", 128, "memory limit in MiB")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "invocation timeout")
	f.StringArrayVar(&env, "env", nil, "environment variable KEY=VALUE (repeatable)")
	f.StringArrayVar(&args, "arg", nil, "argument passed to the function (repeatable)")
	f.StringVar(&sched.KeepAlive, "keep-alive", "", "keep-alive policy: fixed (10m), fixed:DURATION, none, hybrid (default: the daemon's)")
	f.IntVar(&sched.MinInstances, "min-instances", 0, "instances kept started")
	f.IntVar(&sched.MaxInstances, "max-instances", 0, "most instances at once (0: the memory budget decides)")
	f.IntVar(&sched.QueueSize, "queue-size", 0, "requests that may wait for an instance (0: 64); more get 429")
	f.IntVar(&sched.Concurrency, "concurrency", 0, "requests one instance serves at once (wasm: 1)")
	return cmd
}

func deployFile(cmd *cobra.Command, c *client.Client, name, path string, spec func(digest string) api.FunctionSpec) (api.Function, error) {
	f, err := os.Open(path)
	if err != nil {
		return api.Function{}, err
	}
	defer f.Close()
	ref, err := c.UploadArtifact(cmd.Context(), f)
	if err != nil {
		return api.Function{}, fmt.Errorf("upload %s: %w", path, err)
	}
	return c.Deploy(cmd.Context(), name, spec(ref.Digest))
}

// readData resolves --data: "-" is stdin, "@file" a file, else the literal.
func readData(g *globals, data string) (io.Reader, error) {
	switch {
	case data == "-":
		return g.stdin, nil
	case strings.HasPrefix(data, "@"):
		b, err := os.ReadFile(data[1:])
		if err != nil {
			return nil, fmt.Errorf("--data: %w", err)
		}
		return bytes.NewReader(b), nil
	}
	return strings.NewReader(data), nil
}

func newInvoke(g *globals) *cobra.Command {
	var (
		data           string
		verbose, async bool
	)
	cmd := &cobra.Command{
		Use:   "invoke NAME",
		Short: "Invoke a function and print its response",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			body, err := readData(g, data)
			if err != nil {
				return err
			}
			if async {
				inv, err := g.client().InvokeAsync(cmd.Context(), pos[0], body)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", inv.ID)
				fmt.Fprintf(cmd.ErrOrStderr(), "accepted; result: kindling invocation %s --wait, output: kindling logs --invocation %s --follow\n", inv.ID, inv.ID)
				return nil
			}
			res, err := g.client().Invoke(cmd.Context(), pos[0], body)
			if verbose && res != nil {
				printPhases(cmd.ErrOrStderr(), res)
			}
			if err != nil {
				var ce *client.Error
				if errors.As(err, &ce) && ce.Info.StderrTail != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "--- function stderr (tail) ---\n%s", ce.Info.StderrTail)
					if !strings.HasSuffix(ce.Info.StderrTail, "\n") {
						fmt.Fprintln(cmd.ErrOrStderr())
					}
				}
				return err
			}
			_, err = cmd.OutOrStdout().Write(res.Body)
			return err
		},
	}
	cmd.Flags().StringVarP(&data, "data", "d", "", "request body: a literal, @FILE, or - for stdin")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the invocation ID, status and phase table on stderr")
	cmd.Flags().BoolVar(&async, "async", false, "submit in the background (stored durably) and print the invocation ID")
	return cmd
}

func newInvocation(g *globals) *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "invocation ID",
		Short: "Print an invocation's record (status, phases, result) as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			c := g.client()
			for {
				inv, err := c.Invocation(cmd.Context(), pos[0])
				if err != nil {
					return err
				}
				if !wait || inv.Status == api.StatusSucceeded || inv.Status == api.StatusFailed {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					return enc.Encode(inv)
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(100 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the invocation has finished")
	return cmd
}

func printPhases(w io.Writer, res *client.InvokeResult) {
	fmt.Fprintf(w, "invocation %s  status %d  cold start %v\n", res.InvocationID, res.Status, res.Cold)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tduration\tdetail\t")
	for _, p := range res.Phases {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", p.Name, fmtDur(p.Duration), p.Detail)
	}
	fmt.Fprintf(tw, "total\t%s\t\t\n", fmtDur(phase.Total(res.Phases)))
	tw.Flush()
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.3fms", float64(d)/float64(time.Millisecond))
}

func newList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List deployed functions",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fns, err := g.client().List(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tRUNTIME\tMEMORY\tTIMEOUT\tVERSION\tARTIFACT")
			for _, f := range fns {
				art := f.Artifact
				if len(art) > 19 {
					art = art[:19]
				}
				fmt.Fprintf(tw, "%s\t%s\t%dMiB\t%s\t%d\t%s\n", f.Name, f.Runtime, f.MemoryMB, f.Timeout(), f.Version, art)
			}
			return tw.Flush()
		},
	}
}

func newRemove(g *globals) *cobra.Command {
	return newDeleteCommand("rm NAME...", "Delete functions", "", func(ctx context.Context, name string) error {
		return g.client().Delete(ctx, name)
	})
}

// newDeleteCommand is an "rm" verb (alias "delete") that deletes each
// argument in turn with del and prints "deleted [noun ]ARG" for each.
func newDeleteCommand(use, short, noun string, del func(ctx context.Context, arg string) error) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Aliases: []string{"delete"},
		Short:   short,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			for _, arg := range pos {
				if err := del(cmd.Context(), arg); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %s%s\n", noun, arg)
			}
			return nil
		},
	}
}

func newLogs(g *globals) *cobra.Command {
	var (
		opts       client.LogOptions
		invocation string
	)
	cmd := &cobra.Command{
		Use:   "logs NAME | logs --invocation ID",
		Short: "Print a function's logs (its stderr), or one invocation's output",
		RunE: func(cmd *cobra.Command, pos []string) error {
			if invocation != "" {
				if len(pos) > 0 {
					return errors.New("logs --invocation takes no NAME")
				}
				return g.client().InvocationLogs(cmd.Context(), invocation, opts.Follow, cmd.OutOrStdout())
			}
			if len(pos) != 1 {
				return errors.New("usage: kindling logs NAME [--follow] [--since 10m] [--tail N], or kindling logs --invocation ID [--follow]")
			}
			return g.client().Logs(cmd.Context(), pos[0], opts, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&opts.Since, "since", "", "only lines newer than this (RFC 3339 time or a duration like 10m)")
	cmd.Flags().IntVar(&opts.Tail, "tail", 0, "only the last N lines")
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep printing lines as they are written")
	cmd.Flags().StringVar(&invocation, "invocation", "", "print this invocation's output (stdout and stderr while it runs)")
	return cmd
}

func newImage(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage container images for the oci sandbox"}
	var names []string
	imp := &cobra.Command{
		Use:   "import FILE.tar [--name NAME:TAG]...",
		Short: "Import an image tarball (docker-archive or OCI image layout; no registry needed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			f, err := os.Open(pos[0])
			if err != nil {
				return err
			}
			defer f.Close()
			ref, err := g.client().ImportImage(cmd.Context(), f, names...)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %s %s\n", ref.ID, strings.Join(ref.Names, " "))
			return nil
		},
	}
	imp.Flags().StringArrayVar(&names, "name", nil, "name the image (repeatable); names in the tarball are kept too")
	cmd.AddCommand(imp)
	return cmd
}
