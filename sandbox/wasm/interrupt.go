package wasm

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/kindling-dev/kindling/sandbox/wasm/internal/wasmbin"
)

// program is a compiled module and the runtime it was compiled in.
//
// kindling stops a guest at its deadline in one of two ways. A module it
// can instrument (wasmbin.WithInterrupt: a countdown at the head of every
// loop that, every wasmbin.YieldEvery iterations, yields to Go and checks
// a flag) runs in the Driver's main runtime, and callGuest raises the flag
// when the context ends. The yield is what lets the Go scheduler and
// garbage collector stop the goroutine; without it a spinning guest would
// stall every collection, and the deadline's own goroutine with it. A
// module it cannot instrument runs in a second runtime built
// WithCloseOnContextDone, where wazero's compiled code leaves for Go at
// every loop iteration to ask whether the module was closed: correct, and
// 2.5–5.5× slower on compute-bound code.
type program struct {
	wazero.CompiledModule
	rt wazero.Runtime
	// interruptible is true for an instrumented module.
	interruptible bool
}

func (pr *program) instantiate(ctx context.Context, cfg wazero.ModuleConfig) (api.Module, error) {
	return pr.rt.InstantiateModule(ctx, pr.CompiledModule, cfg)
}

// instrument returns bin with the interrupt check, or an error wrapping
// wasmbin.ErrUnsupported (or a parse error) when that cannot be done.
func instrument(bin []byte) ([]byte, error) {
	m, err := wasmbin.Parse(bin)
	if err != nil {
		return nil, err
	}
	return m.WithInterrupt()
}

// compileProgram compiles bin instrumented in the main runtime, or as it is
// in the runtime that closes modules on context done.
func (d *Driver) compileProgram(ctx context.Context, bin []byte) (*program, error) {
	if ibin, err := instrument(bin); err == nil {
		if mod, err := d.rt.CompileModule(ctx, ibin); err == nil {
			return &program{CompiledModule: mod, rt: d.rt, interruptible: true}, nil
		}
		// The engine rejects the instrumented module: compile the original
		// for its own error, or its correct run.
	}
	mod, err := d.rtClose.CompileModule(ctx, bin)
	if err != nil {
		return nil, err
	}
	return &program{CompiledModule: mod, rt: d.rtClose}, nil
}

// callGuest calls fn of mod and, for an instrumented module, raises its
// interrupt flag when ctx ends so that the guest traps at its next yield;
// the error then wraps ctx's. (A module in the closing runtime
// is stopped by wazero itself.)
func callGuest(ctx context.Context, mod api.Module, fn api.Function, params ...uint64) ([]uint64, error) {
	flag, ok := mod.ExportedGlobal(wasmbin.InterruptExport).(api.MutableGlobal)
	if !ok || ctx.Done() == nil {
		return fn.Call(ctx, params...)
	}
	var (
		mu              sync.Mutex
		done, triggered bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			flag.Set(1)
			triggered = true
		}
	})
	res, err := fn.Call(ctx, params...)
	stop()
	mu.Lock()
	done = true
	interrupted := triggered
	mu.Unlock()
	if interrupted && err != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return res, err
}
