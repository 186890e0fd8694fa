package cli

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindling-dev/kindling/daemon"
	"github.com/kindling-dev/kindling/tracing"
)

func newServe() *cobra.Command {
	var (
		listen, dataDir, logFormat, logLevel string
		deploy                               []string
		maxBody                              int64
		drain                                time.Duration
		memBudget                            int
		keepAlive, traceExporter, traceURL   string
		ociRuntime, agentPath                string
		microVM                              bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the kindling daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			d, err := daemon.New(ctx, daemon.Config{DataDir: dataDir, Logger: log, MaxBodyBytes: maxBody,
				MemoryBudgetMB: memBudget, KeepAlive: keepAlive, OCIRuntime: ociRuntime, AgentPath: agentPath, MicroVM: microVM,
				Tracing: tracing.Config{Exporter: traceExporter, Endpoint: traceURL}})
			if err != nil {
				return err
			}
			defer d.Close(ctx)
			for _, m := range deploy {
				if err := d.DeployManifest(ctx, m); err != nil {
					return fmt.Errorf("deploy %s: %w", m, err)
				}
				log.Info("manifest deployed", "file", m)
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			return d.Serve(ctx, ln, drain)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve the API on")
	f.StringVar(&dataDir, "data-dir", defaultDataDir(), "data directory (functions, artifacts, caches, logs)")
	f.StringArrayVar(&deploy, "deploy", nil, "deploy the functions of this kindling.yaml at start (repeatable)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.Int64Var(&maxBody, "max-body-bytes", 6<<20, "largest accepted invocation body")
	f.DurationVar(&drain, "drain", 30*time.Second, "how long to let in-flight requests finish on shutdown")
	f.IntVar(&memBudget, "memory-budget", 0, "memory (MiB) all instances share; 0 means half of the host's memory")
	f.StringVar(&keepAlive, "keep-alive", "fixed", "default keep-alive policy: fixed (10m), fixed:DURATION, none, hybrid")
	f.StringVar(&ociRuntime, "oci-runtime", "runc", "OCI runtime of the oci sandbox: runc, crun, or none")
	f.BoolVar(&microVM, "microvm", false, "enable the microvm sandbox (QEMU guests restored from templates; runtime \"microvm\")")
	f.StringVar(&agentPath, "agent", "", "static kindling-agent binary for containers (default: next to kindling, else on PATH)")
	f.StringVar(&traceExporter, "trace-exporter", "none", "trace exporter: none, stdout, otlp, zipkin")
	f.StringVar(&traceURL, "trace-endpoint", "", "OTLP collector base URL (default http://127.0.0.1:4318) or Zipkin spans URL (default http://127.0.0.1:9411/api/v2/spans)")
	return cmd
}

func newLogger(w interface{ Write([]byte) (int, error) }, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}
