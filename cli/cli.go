// Package cli implements the kindling command line: the daemon (serve),
// the client verbs that talk to it (deploy, invoke, ls, rm, logs) and the
// one-shot runner (run).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kindling-dev/kindling/client"
)

// exitError carries a specific process exit code (e.g. a guest's).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Run executes the CLI with args and returns the process exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintf(stderr, "kindling: %v\n", err)
	return 1
}

type globals struct {
	server string
	stdin  io.Reader
}

func (g *globals) client() *client.Client { return client.New(g.server) }

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdin: stdin}
	root := &cobra.Command{
		Use:           "kindling",
		Short:         "kindling runs functions that answer cold as fast as warm",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	defURL := os.Getenv("KINDLING_URL")
	if defURL == "" {
		defURL = client.DefaultURL
	}
	root.PersistentFlags().StringVar(&g.server, "server", defURL, "kindling daemon URL (or $KINDLING_URL)")
	root.AddCommand(
		newServe(),
		newDeploy(g),
		newInvoke(g),
		newList(g),
		newRemove(g),
		newLogs(g),
		newRunCmd(g),
		newBuild(),
		newInvocation(g),
		newSim(),
		newBench(g),
		newImage(g),
		newVM(g), newSnapshotCmd(g),
	)
	return root
}

// defaultDataDir is $KINDLING_DATA_DIR, else $XDG_DATA_HOME/kindling, else
// ~/.local/share/kindling.
func defaultDataDir() string {
	if d := os.Getenv("KINDLING_DATA_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "kindling")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "kindling")
	}
	return ".kindling"
}
