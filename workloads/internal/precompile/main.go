// Command precompile fills a wazero compilation cache with the given
// WebAssembly modules, compiled with wazero's default runtime configuration.
//
// Usage:
//
//	go run ./workloads/internal/precompile -cache DIR module.wasm...
//
// The workloads tests use it when they run under the race detector, where
// wazero's compiler is instrumented and several times slower: compiling in
// this uninstrumented process and loading the result from the cache keeps
// the test run short. Modules are compiled concurrently, one per CPU.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/tetratelabs/wazero"
)

func main() {
	dir := flag.String("cache", "", "compilation cache `directory` (required)")
	flag.Parse()
	if *dir == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: precompile -cache DIR module.wasm...")
		os.Exit(2)
	}
	if err := precompile(context.Background(), *dir, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "precompile:", err)
		os.Exit(1)
	}
}

func precompile(ctx context.Context, dir string, paths []string) error {
	cache, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		return err
	}
	defer cache.Close(ctx)
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(cache))
	defer rt.Close(ctx)

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, runtime.NumCPU())
	)
	for _, path := range paths {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			bin, err := os.ReadFile(path)
			if err == nil {
				_, err = rt.CompileModule(ctx, bin)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", path, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
