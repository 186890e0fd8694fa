package wasm

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/kindling-dev/kindling/errdefs"
)

// environ is the WASI environment a guest call sees: "KEY=VALUE" entries,
// each NUL-terminated, in one buffer.
//
// kindling serves WASI's environ_sizes_get and environ_get itself, from the
// environ in the call's context, instead of wazero's versions, which read
// the module config's. A wazero module config takes variables one WithEnv
// at a time, each copying the whole config and its key index: a command's
// ~20 CGI variables cost it more than the rest of its cold start (with 16,
// a tiny command took 11.7 µs instead of 3.9; with an environ, 4.4). And
// the copies share their environment array with the original, so a
// variable set for one request could show in another's (TestRequestEnv).
// An environ is built once per call, into one buffer, and shared by nobody.
type environ struct {
	buf  []byte   // the entries, each followed by a NUL
	ends []uint32 // the index just past each entry's NUL
}

// dedupIndexMin is the entry count above which newEnviron finds repeated
// keys with a map rather than by scanning the entries so far.
const dedupIndexMin = 32

// newEnviron joins lists of KEY=VALUE variables, a later value of a key
// replacing an earlier one in its place; an entry without "=" sets the key
// to the empty string, and one with an empty key is ignored. A NUL byte
// anywhere is an error: the guest could not see past it.
func newEnviron(lists ...[]string) (*environ, error) {
	n, size := 0, 0
	for _, list := range lists {
		n += len(list)
		for _, kv := range list {
			size += len(kv) + 2 // "=" if missing, and the NUL
		}
	}
	e := &environ{buf: make([]byte, 0, size), ends: make([]uint32, 0, n)}
	var index map[string]int // key -> entry, once there are many
	var keys []string        // key of each entry, while there are few
	for _, list := range lists {
		for _, kv := range list {
			k, v, _ := strings.Cut(kv, "=")
			if k == "" {
				continue
			}
			if strings.IndexByte(kv, 0) >= 0 {
				return nil, fmt.Errorf("environment variable %q contains a NUL byte: %w", k, errdefs.ErrInvalidArgument)
			}
			i := -1
			if index != nil {
				if j, ok := index[k]; ok {
					i = j
				}
			} else {
				for j, key := range keys {
					if key == k {
						i = j
						break
					}
				}
			}
			if i >= 0 {
				e.replace(i, k, v)
				continue
			}
			e.buf = append(append(append(append(e.buf, k...), '='), v...), 0)
			e.ends = append(e.ends, uint32(len(e.buf)))
			switch {
			case index != nil:
				index[k] = len(e.ends) - 1
			case len(keys) < dedupIndexMin:
				keys = append(keys, k)
			default:
				index = make(map[string]int, n)
				for j, key := range keys {
					index[key] = j
				}
				index[k] = len(e.ends) - 1
				keys = nil
			}
		}
	}
	return e, nil
}

// replace sets entry i, whose key is k, to k=v.
func (e *environ) replace(i int, k, v string) {
	start := uint32(0)
	if i > 0 {
		start = e.ends[i-1]
	}
	old := e.ends[i] - start
	entry := make([]byte, 0, len(k)+len(v)+2)
	entry = append(append(append(append(entry, k...), '='), v...), 0)
	tail := append([]byte(nil), e.buf[e.ends[i]:]...)
	e.buf = append(append(e.buf[:start], entry...), tail...)
	delta := int64(len(entry)) - int64(old)
	for j := i; j < len(e.ends); j++ {
		e.ends[j] = uint32(int64(e.ends[j]) + delta)
	}
}

// entries returns the variables as KEY=VALUE strings (for tests and errors).
func (e *environ) entries() []string {
	out := make([]string, len(e.ends))
	start := uint32(0)
	for i, end := range e.ends {
		out[i] = string(e.buf[start : end-1])
		start = end
	}
	return out
}

type environKey struct{}

// withEnviron returns ctx carrying e for the guest calls made with it.
func withEnviron(ctx context.Context, e *environ) context.Context {
	return context.WithValue(ctx, environKey{}, e)
}

// noEnviron is what a call made without an environ sees.
var noEnviron = &environ{}

// environFrom returns the environ ctx carries; a call without one sees an
// empty environment.
func environFrom(ctx context.Context) *environ {
	if e, ok := ctx.Value(environKey{}).(*environ); ok {
		return e
	}
	return noEnviron
}

// errnoFault is WASI's EFAULT: an argument points outside the memory.
const errnoFault = 21

// instantiateWASI instantiates WASI preview 1 in rt with kindling's
// environ_sizes_get and environ_get in place of wazero's.
func instantiateWASI(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	i32 := []api.ValueType{api.ValueTypeI32, api.ValueTypeI32}
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(environSizesGet), i32, []api.ValueType{api.ValueTypeI32}).
		WithParameterNames("result.environc", "result.environv_len").
		Export("environ_sizes_get")
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(environGet), i32, []api.ValueType{api.ValueTypeI32}).
		WithParameterNames("environ", "environ_buf").
		Export("environ_get")
	_, err := b.Instantiate(ctx)
	return err
}

// environSizesGet writes the number of variables and the size of their
// NUL-terminated entries.
func environSizesGet(ctx context.Context, mod api.Module, stack []uint64) {
	e := environFrom(ctx)
	mem := mod.Memory()
	if mem == nil ||
		!mem.WriteUint32Le(uint32(stack[0]), uint32(len(e.ends))) ||
		!mem.WriteUint32Le(uint32(stack[1]), uint32(len(e.buf))) {
		stack[0] = errnoFault
		return
	}
	stack[0] = 0
}

// environGet writes each entry's address to the array at environ and the
// entries themselves to environ_buf.
func environGet(ctx context.Context, mod api.Module, stack []uint64) {
	e := environFrom(ctx)
	ptrs, bufAt := uint32(stack[0]), uint32(stack[1])
	mem := mod.Memory()
	if mem == nil {
		stack[0] = errnoFault
		return
	}
	offsets, ok1 := mem.Read(ptrs, uint32(4*len(e.ends)))
	buf, ok2 := mem.Read(bufAt, uint32(len(e.buf)))
	if !ok1 || !ok2 {
		stack[0] = errnoFault
		return
	}
	start := uint32(0)
	for i, end := range e.ends {
		binary.LittleEndian.PutUint32(offsets[4*i:], bufAt+start)
		start = end
	}
	copy(buf, e.buf)
	stack[0] = 0
}
