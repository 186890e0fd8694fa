package wasm

import (
	"encoding/binary"
	"os"
	"unsafe"
)

// Bits of a /proc/self/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
const (
	pagemapPresent  = 1 << 63
	pagemapFileOrSh = 1 << 61 // file-backed or shared anonymous
)

// privatePages returns the bytes of b's pages that are present and
// private anonymous: the pages an instance wrote.
func privatePages(b []byte) uint64 {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0
	}
	defer f.Close()
	page := uint64(os.Getpagesize())
	start := uint64(uintptr(unsafe.Pointer(&b[0]))) / page
	n := (uint64(len(b)) + page - 1) / page
	buf := make([]byte, 8*n)
	if _, err := f.ReadAt(buf, int64(start*8)); err != nil {
		return 0
	}
	var pages uint64
	for i := uint64(0); i < n; i++ {
		e := binary.LittleEndian.Uint64(buf[8*i:])
		if e&pagemapPresent != 0 && e&pagemapFileOrSh == 0 {
			pages++
		}
	}
	return pages * page
}
