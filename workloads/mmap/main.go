// Command mmap allocates a buffer of N MiB and touches it page by page, the
// way a function that maps and faults in a large region would, then reads the
// pages back. KINDLING_SIZE is the size in MiB (small: 32, medium: 128,
// large: 512).
package main

import (
	"strconv"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

const (
	name     = "mmap"
	pageSize = 4096
)

func init() { harness.Register("mmap", run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	mib := harness.Size(name, 32, 128, 512)
	buf := make([]byte, mib<<20)

	// Touch one word on every page so each page is faulted in.
	pages := len(buf) / pageSize
	for p := range pages {
		off := p * pageSize
		v := uint32(p)*2654435761 + 1
		buf[off] = byte(v)
		buf[off+1] = byte(v >> 8)
		buf[off+2] = byte(v >> 16)
		buf[off+3] = byte(v >> 24)
	}

	// Read every page back and verify what was written.
	var sum uint64
	for p := range pages {
		off := p * pageSize
		v := uint32(buf[off]) | uint32(buf[off+1])<<8 | uint32(buf[off+2])<<16 | uint32(buf[off+3])<<24
		if v != uint32(p)*2654435761+1 {
			harness.Fail(name, "page "+strconv.Itoa(p)+" lost its contents")
		}
		sum += uint64(v)
	}
	harness.Emit(name, strconv.Itoa(pages)+"-"+strconv.FormatUint(sum, 10))
}
