package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/workloads"
)

// FloorPeer is the name of the bare-wazero peer.
const FloorPeer = "floor"

func init() {
	Register(Sandbox{
		Name:  FloorPeer,
		Peer:  true,
		Modes: []Mode{Warm},
		New:   func(Mode, *Env) (Column, error) { return floorColumn{}, nil },
	})
}

// floorColumn is the floor under kindling's wasm sandbox: the same module
// run by bare wazero, in its default configuration, with nothing of
// kindling around it. It compiles once and then, per run, instantiates
// the module and calls _start. Its run phase covers the guest's start-up
// and closing the module. Without kindling's termination checks, a guest
// that never returns is not stopped by the timeout.
type floorColumn struct{}

func (floorColumn) Info() ColumnInfo {
	return ColumnInfo{
		Name:    FloorPeer,
		Sandbox: FloorPeer,
		Mode:    Warm,
		Peer:    true,
		Target:  workloads.TargetWasm,
		About:   "bare wazero, compiled once: instantiate + run (start-up included), no kindling code",
	}
}

func (floorColumn) Prepare(ctx context.Context, w Workload) (Runner, error) {
	path, err := w.Artifact(workloads.TargetWasm)
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	rt := wazero.NewRuntime(ctx)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		return nil, errors.Join(fmt.Errorf("instantiate WASI: %w", err), rt.Close(ctx))
	}
	mod, err := rt.CompileModule(ctx, bin)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("compile: %w", err), rt.Close(ctx))
	}
	return &floorRunner{name: w.Name, rt: rt, mod: mod}, nil
}

type floorRunner struct {
	name string
	rt   wazero.Runtime
	mod  wazero.CompiledModule
}

func (r *floorRunner) Run(ctx context.Context, req *sandbox.Request) error {
	start := time.Now()
	// The same guest configuration as kindling's (arguments, stdio, real
	// clocks and randomness), so only the sandbox around it differs.
	cfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions().
		WithArgs(r.name).
		WithStdin(req.Stdin).
		WithStdout(req.Stdout).
		WithStderr(req.Stderr).
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithRandSource(rand.Reader)
	mod, err := r.rt.InstantiateModule(ctx, r.mod, cfg)
	start = req.Phases.Since(phase.Instantiate, start, "")
	if err != nil {
		return fmt.Errorf("instantiate: %w", err)
	}
	_, err = mod.ExportedFunction("_start").Call(ctx)
	err = errors.Join(exitOK(err), mod.Close(ctx))
	req.Phases.Since(phase.Run, start, "")
	return err
}

// exitOK treats a guest's exit with status 0 as success.
func exitOK(err error) error {
	var exit *sys.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

func (r *floorRunner) Close(ctx context.Context) error { return r.rt.Close(ctx) }
