//go:build wasmtime && cgo

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/bytecodealliance/wasmtime-go/v39"

	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/workloads"
)

func init() {
	Register(Sandbox{
		Name:  WasmtimePeer,
		Peer:  true,
		Modes: []Mode{Warm},
		New: func(_ Mode, env *Env) (Column, error) {
			return &wasmtimeColumn{env: env}, nil
		},
	})
}

// wasmtimeColumn runs the same module under Wasmtime (wasmtime-go, its C
// API), in its default configuration plus epoch interruption so the
// timeout can stop a guest. It compiles once; per run, it creates a store
// with a WASI context, instantiates the module and calls _start. WASI stdio
// goes through files, the way the C API offers it.
type wasmtimeColumn struct{ env *Env }

func (c *wasmtimeColumn) Info() ColumnInfo {
	return ColumnInfo{
		Name:    WasmtimePeer,
		Sandbox: WasmtimePeer,
		Mode:    Warm,
		Peer:    true,
		Target:  workloads.TargetWasm,
		About:   "wasmtime-go " + wasmtimeVersion + ", compiled once: store + WASI + instantiate, then run (start-up included)",
	}
}

// wasmtimeVersion is the wasmtime-go module this column links.
const wasmtimeVersion = "v39"

func (c *wasmtimeColumn) Prepare(ctx context.Context, w Workload) (Runner, error) {
	path, err := w.Artifact(workloads.TargetWasm)
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	dir, err := os.MkdirTemp(c.env.Dir, "wasmtime-")
	if err != nil {
		return nil, fmt.Errorf("stdio directory: %w", err)
	}
	r := &wasmtimeRunner{
		name:   w.Name,
		stdin:  filepath.Join(dir, "stdin"),
		stdout: filepath.Join(dir, "stdout"),
		stderr: filepath.Join(dir, "stderr"),
	}
	if err := os.WriteFile(r.stdin, w.Stdin, 0o600); err != nil {
		return nil, fmt.Errorf("stdin file: %w", err)
	}
	cfg := wasmtime.NewConfig()
	cfg.SetEpochInterruption(true)
	r.engine = wasmtime.NewEngineWithConfig(cfg)
	r.linker = wasmtime.NewLinker(r.engine)
	if err := r.linker.DefineWasi(); err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("define WASI: %w", err)
	}
	if r.module, err = wasmtime.NewModule(r.engine, bin); err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("compile: %w", err)
	}
	return r, nil
}

type wasmtimeRunner struct {
	name                  string
	stdin, stdout, stderr string
	engine                *wasmtime.Engine
	linker                *wasmtime.Linker
	module                *wasmtime.Module
}

func (r *wasmtimeRunner) Run(ctx context.Context, req *sandbox.Request) error {
	// The request's stdin is the workload's, already in r.stdin.
	start := time.Now()
	store := wasmtime.NewStore(r.engine)
	defer store.Close()
	wasi := wasmtime.NewWasiConfig()
	wasi.SetArgv([]string{r.name})
	if err := errors.Join(wasi.SetStdinFile(r.stdin), wasi.SetStdoutFile(r.stdout), wasi.SetStderrFile(r.stderr)); err != nil {
		wasi.Close()
		return fmt.Errorf("WASI stdio: %w", err)
	}
	store.SetWasi(wasi)
	// The guest traps at the next epoch, which only a timeout starts.
	store.SetEpochDeadline(1)
	inst, err := r.linker.Instantiate(store, r.module)
	start = req.Phases.Since(phase.Instantiate, start, "")
	if err != nil {
		return fmt.Errorf("instantiate: %w", err)
	}
	entry := inst.GetFunc(store, "_start")
	if entry == nil {
		return errors.New("module exports no _start function")
	}
	stop := context.AfterFunc(ctx, r.engine.IncrementEpoch)
	_, err = entry.Call(store)
	stop()
	store.Close()
	req.Phases.Since(phase.Run, start, "")
	if err := wasmtimeExitOK(err); err != nil {
		copyFile(req.Stderr, r.stderr)
		return err
	}
	return errors.Join(copyFile(req.Stdout, r.stdout), copyFile(req.Stderr, r.stderr))
}

// wasmtimeExitOK treats a WASI exit with status 0 as success.
func wasmtimeExitOK(err error) error {
	var werr *wasmtime.Error
	if errors.As(err, &werr) {
		if status, ok := werr.ExitStatus(); ok && status == 0 {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

func copyFile(w io.Writer, path string) error {
	if w == nil {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read guest output: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("read guest output: %w", err)
	}
	return nil
}

func (r *wasmtimeRunner) Close(context.Context) error {
	if r.module != nil {
		r.module.Close()
	}
	if r.linker != nil {
		r.linker.Close()
	}
	if r.engine != nil {
		r.engine.Close()
	}
	return nil
}
