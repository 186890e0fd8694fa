package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"
)

func newBuild() *cobra.Command {
	var (
		out     string
		command bool
	)
	cmd := &cobra.Command{
		Use:   "build [PACKAGE]",
		Short: "Build a Go function (written with the kindling SDK) into a WebAssembly module",
		Long: `Build compiles a Go package for WASI (GOOS=wasip1 GOARCH=wasm). By default it
builds a reactor (-buildmode=c-shared): kindling initializes it once at deploy,
snapshots it, and starts every invocation from the snapshot. --command builds
an ordinary WASI command instead, started from scratch per invocation.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			pkg := "."
			if len(pos) == 1 {
				pkg = pos[0]
			}
			if out == "" {
				abs, err := filepath.Abs(pkg)
				if err != nil {
					return err
				}
				out = filepath.Base(abs) + ".wasm"
			}
			args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", out}
			if !command {
				args = append(args, "-buildmode=c-shared")
			}
			gocmd := exec.CommandContext(cmd.Context(), "go", append(args, pkg)...)
			gocmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			gocmd.Stdout, gocmd.Stderr = cmd.ErrOrStderr(), cmd.ErrOrStderr()
			if err := gocmd.Run(); err != nil {
				return fmt.Errorf("go build %s: %w", pkg, err)
			}
			st, err := os.Stat(out)
			if err != nil {
				return err
			}
			kind := "reactor (snapshot-ready)"
			if command {
				kind = "command"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "built %s: %s, %d KiB\n", out, kind, st.Size()>>10)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "output file (default: the package directory's name + .wasm)")
	cmd.Flags().BoolVar(&command, "command", false, "build a WASI command instead of a snapshot-ready reactor")
	return cmd
}
