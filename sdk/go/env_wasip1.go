//go:build wasip1

package kindling

import (
	"strings"
	"unsafe"
)

//go:wasmimport wasi_snapshot_preview1 environ_sizes_get
func environSizesGet(count, size *uint32) uint32

//go:wasmimport wasi_snapshot_preview1 environ_get
func environGet(environ *uint32, buf *byte) uint32

// environ reads the current instance's environment from WASI, not from
// the Go runtime's copy made at initialization.
func environ() envList {
	var count, size uint32
	if environSizesGet(&count, &size) != 0 || count == 0 {
		return nil
	}
	ptrs := make([]uint32, count)
	buf := make([]byte, size)
	if environGet(&ptrs[0], &buf[0]) != 0 {
		return nil
	}
	// One string of the whole buffer: every entry is a substring of it.
	all := string(buf)
	base := uint32(uintptr(unsafe.Pointer(&buf[0])))
	env := make(envList, 0, count)
	for _, p := range ptrs {
		kv, _, _ := strings.Cut(all[p-base:], "\x00")
		env = env.add(kv)
	}
	return env
}

// handle is the reactor entry point kindling calls for each invocation of
// a snapshot-restored instance. It returns the exit code.
//
//go:wasmexport kindling_handle
func handle() int32 { return int32(serve(true)) }
