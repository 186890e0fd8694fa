// Command build-workloads compiles kindling's benchmark functions.
//
// Usage:
//
//	go run ./workloads/cmd/build-workloads -out DIR [-target wasm|linux|all] [names...]
//
// It builds the named workloads (all of them by default) as WASI modules
// (DIR/<name>.wasm), static linux/amd64 binaries (DIR/<name>) or both, and
// prints one line per built workload.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/kindling-dev/kindling/workloads"
)

func main() {
	out := flag.String("out", "", "output `directory` (required)")
	target := flag.String("target", workloads.TargetWasm, "build `target`: wasm, linux or all")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: build-workloads -out DIR [-target wasm|linux|all] [names...]\n\nworkloads:\n")
		for _, w := range workloads.All() {
			fmt.Fprintf(flag.CommandLine.Output(), "  %-12s %s\n", w.Name, w.Description)
		}
		fmt.Fprintf(flag.CommandLine.Output(), "\nflags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	targets := []string{*target}
	if *target == "all" {
		targets = []string{workloads.TargetWasm, workloads.TargetLinux}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := build(ctx, *out, targets, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "build-workloads:", err)
		os.Exit(1)
	}
}

// build compiles names for each target and reports every output.
func build(ctx context.Context, out string, targets, names []string) error {
	for _, target := range targets {
		start := time.Now()
		paths, err := workloads.Build(ctx, target, out, names...)
		if err != nil {
			return err
		}
		elapsed := time.Since(start).Round(time.Millisecond)
		for _, w := range workloads.All() {
			path, ok := paths[w.Name]
			if !ok {
				continue
			}
			info, err := os.Stat(path)
			if err != nil {
				return err
			}
			fmt.Printf("%-5s %-12s %s (%.1f MiB)\n", target, w.Name, path, float64(info.Size())/(1<<20))
		}
		fmt.Printf("%-5s built %d workloads in %v\n", target, len(paths), elapsed)
	}
	return nil
}
