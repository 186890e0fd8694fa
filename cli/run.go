package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/sandbox/wasm"
)

func newRunCmd(g *globals) *cobra.Command {
	var (
		memory  int
		timeout time.Duration
		env     []string
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "run FILE.wasm [-- ARGS...]",
		Short: "Run a WebAssembly module once, without a daemon (stdin in, stdout out)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			ctx := cmd.Context()
			bin, err := os.ReadFile(pos[0])
			if err != nil {
				return err
			}
			for _, kv := range env {
				if !strings.Contains(kv, "=") {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
			}
			var opts []wasm.Option
			if dir, err := os.UserCacheDir(); err == nil {
				opts = append(opts, wasm.WithCacheDir(filepath.Join(dir, "kindling", "wasm")))
			}
			d, err := wasm.New(ctx, opts...)
			if err != nil {
				return err
			}
			defer d.Close(ctx)
			spec := sandbox.BytesSpec(filepath.Base(pos[0]), bin, memory)
			spec.Args, spec.Env = pos[1:], env
			rec := phase.NewRecorder()
			p, err := d.Prepare(ctx, spec, rec)
			if err != nil {
				return err
			}
			defer p.Close(ctx)
			inst, err := p.Start(ctx, rec)
			if err != nil {
				return err
			}
			defer inst.Close(ctx)
			var stdin io.Reader = bytes.NewReader(nil)
			if g.stdin != nil {
				stdin = g.stdin
			}
			tctx, cancel := contextWithTimeout(ctx, timeout)
			defer cancel()
			_, err = inst.Invoke(tctx, &sandbox.Request{Stdin: stdin, Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr(), Phases: rec})
			if verbose {
				for _, t := range rec.Timings() {
					fmt.Fprintf(cmd.ErrOrStderr(), "%-12s %10s %s\n", t.Name, fmtDur(t.Duration), t.Detail)
				}
			}
			if fe, ok := errdefs.AsFunctionError(err); ok && fe.Kind == errdefs.KindExit {
				return exitError{code: fe.ExitCode}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&memory, "memory", 128, "memory limit in MiB")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "stop the module after this long")
	f.StringArrayVar(&env, "env", nil, "environment variable KEY=VALUE (repeatable)")
	f.BoolVarP(&verbose, "verbose", "v", false, "print the phase timings on stderr")
	return cmd
}
