package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
)

// EnvFrameMagic starts the header that carries a request's environment on
// a reactor's stdin: "KINDLING/1 <n>\n" followed by n bytes of
// NUL-terminated KEY=VALUE pairs, then the request body. A reactor's
// environment (WASI environ) is the one it was initialized with, so the
// request's own variables travel this way; the Go SDK reads them.
const EnvFrameMagic = "KINDLING/1 "

// reactor is a live instance of a snapshot module. It starts in the
// snapshot's state, serves one request, and — if it finished cleanly
// without growing its memory — is reset to the snapshot (the pages it
// wrote get the image's contents back, see memoryLimit.reset; its globals
// are set again) and pooled for the next request. Each request therefore sees exactly the
// snapshot's state, as a new instance would, without paying instantiation.
type reactor struct {
	mod    api.Module
	handle api.Function
	mem    *memoryLimit
	io     *stdio
}

// poolSize bounds the ready instances kept per function.
var poolSize = max(4, 2*runtime.GOMAXPROCS(0))

func (p *prepared) newReactor(ctx context.Context, rec *phase.Recorder) (*reactor, error) {
	start := time.Now()
	r := &reactor{io: &stdio{}, mem: &memoryLimit{limit: uint64(p.spec.MemoryMB) << 20, image: p.snap.image.acquire()}}
	cfg := p.baseConfig.
		WithStdin(stdinReader{r.io}).
		WithStdout(stdoutWriter{r.io}).
		WithStderr(stderrWriter{r.io})
	// The instance outlives this request: it must not be closed when the
	// request's context ends (timeouts are enforced per call).
	mod, err := p.snap.module.instantiate(experimental.WithMemoryAllocator(withEnviron(context.WithoutCancel(ctx), p.env), r.mem), cfg)
	t := rec.Since(phase.Instantiate, start, "")
	if err != nil {
		r.close()
		return nil, classify(ctx, err, r.mem, "instantiate")
	}
	r.mod, r.handle = mod, mod.ExportedFunction(exportHandle)
	if err := p.snap.restoreGlobals(mod); err != nil {
		r.close()
		return nil, fmt.Errorf("wasm: restore snapshot: %w", err)
	}
	rec.Since(phase.Restore, t, "")
	return r, nil
}

// reset returns the instance to the snapshot's state and reports the
// bytes of memory it had made its own.
func (r *reactor) reset(s *snapshot) (private uint64, err error) {
	if private, err = r.mem.reset(); err != nil {
		return private, err
	}
	return private, s.restoreGlobals(r.mod)
}

func (r *reactor) close() {
	if r.mod != nil {
		_ = r.mod.Close(context.Background())
	}
	r.mem.free()
}

// recycle resets an instance that finished cleanly and pools it, and
// returns the bytes it had made private.
func (p *prepared) recycle(r *reactor) uint64 {
	private, err := r.reset(p.snap)
	if err != nil {
		r.close()
		return private
	}
	p.put(r)
	return private
}

// put pools a reset instance, or closes it when the pool is full or the
// function is gone.
func (p *prepared) put(r *reactor) {
	p.poolMu.Lock()
	defer p.poolMu.Unlock()
	if !p.closed {
		select {
		case p.pool <- r:
			return
		default:
		}
	}
	r.close()
}

// envFrame encodes a request's environment for a reactor's stdin: the
// environ's own NUL-terminated entries, the block WASI's environ_get would
// hand a command.
func envFrame(env *environ) []byte {
	b := make([]byte, 0, len(EnvFrameMagic)+12+len(env.buf))
	b = append(b, EnvFrameMagic...)
	b = strconv.AppendInt(b, int64(len(env.buf)), 10)
	b = append(b, '\n')
	return append(b, env.buf...)
}

// invokeReactor serves a request with a pooled or new snapshot instance.
func (i *instance) invokeReactor(ctx context.Context, req *sandbox.Request) (sandbox.Result, error) {
	p := i.p
	rec := req.Phases
	begin := time.Now()
	env, err := newEnviron(p.spec.Env, req.Env)
	if err != nil {
		p.put(i.reactor) // never run: still the snapshot's
		i.reactor = nil
		return sandbox.Result{}, fmt.Errorf("wasm: request: %w", err)
	}
	r := i.reactor
	res := sandbox.Result{Warm: i.pooled}
	i.reactor = nil
	t := time.Now()
	var stdin io.Reader = bytes.NewReader(envFrame(env))
	if req.Stdin != nil {
		stdin = io.MultiReader(stdin, req.Stdin)
	}
	r.io.bind(stdin, req.Stdout, req.Stderr, t)
	results, err := callGuest(withEnviron(ctx, p.env), r.mod, r.handle)
	end := time.Now()
	recordRun(rec, t, r.io.firstTouch(end), end)
	r.io.unbind()

	res.MemoryBytes = memSize(r.mod)
	if err == nil && res.MemoryBytes == p.snap.image.size {
		// The reset counts the private pages anyway: report them.
		res.TouchedBytes = p.recycle(r)
	} else {
		if p.d.accounting {
			res.TouchedBytes = r.mem.touched(res.MemoryBytes)
		}
		r.close()
	}
	res.Duration = rec.Since(phase.Teardown, end, "").Sub(begin)

	switch {
	case err == nil && len(results) == 1 && int32(results[0]) != 0:
		res.ExitCode = int(int32(results[0]))
		return res, &errdefs.FunctionError{Kind: errdefs.KindExit, ExitCode: res.ExitCode}
	case err == nil:
		return res, nil
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 0 {
		return res, nil
	}
	ferr := classify(ctx, err, r.mem, "run")
	if fe, ok := errdefs.AsFunctionError(ferr); ok {
		res.ExitCode = fe.ExitCode
	}
	return res, ferr
}
