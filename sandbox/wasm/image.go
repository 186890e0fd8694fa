package wasm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// memImage is a snapshot's memory, in a file. Instances map it
// copy-on-write as the start of their linear memory; a read-only view of
// it (data) is the source that a reset copies written pages back from.
// Each instance holds a reference, so the file and the view outlive the
// snapshot for as long as an instance may still map or copy from them.
type memImage struct {
	f    *os.File
	size uint64
	data []byte // read-only shared mapping of f; nil when size is 0
	refs atomic.Int64
}

// openImage opens a snapshot's memory file of size bytes, holding one
// reference for the caller.
func openImage(path string, size uint64) (*memImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wasm: open snapshot image: %w", err)
	}
	im := &memImage{f: f, size: size}
	if size > 0 {
		if im.data, err = unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED); err != nil {
			f.Close()
			return nil, fmt.Errorf("wasm: map snapshot image: %w", err)
		}
	}
	im.refs.Store(1)
	return im, nil
}

// acquire takes a reference.
func (im *memImage) acquire() *memImage {
	im.refs.Add(1)
	return im
}

// release drops a reference; the last one unmaps and closes the image.
func (im *memImage) release() error {
	if im.refs.Add(-1) != 0 {
		return nil
	}
	var err error
	if im.data != nil {
		err = unix.Munmap(im.data)
		im.data = nil
	}
	return errors.Join(err, im.f.Close())
}

// Bits of a /proc/self/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
const (
	pagemapPresent  = 1 << 63
	pagemapSwapped  = 1 << 62
	pagemapFileOrSh = 1 << 61 // file-backed or shared anonymous
)

// pagemap is this process's /proc/self/pagemap, opened once and read
// concurrently with pread.
var pagemap = sync.OnceValues(func() (*os.File, error) { return os.Open("/proc/self/pagemap") })

// pageSize is the host's page size, the unit of pagemap and of copy-on-write.
var pageSize = uint64(os.Getpagesize())

// scanPrivate calls page with the index of each of b's pages that is
// private to this mapping: written at some point (a copy-on-write copy of
// the image, or a zero page filled in), resident or swapped out. It asks
// the kernel for just those pages with the PAGEMAP_SCAN ioctl (Linux 6.7),
// or reads every page's pagemap entry into buf (grown as needed and
// returned) on older kernels.
func scanPrivate(b []byte, buf []byte, page func(i uint64)) ([]byte, error) {
	f, err := pagemap()
	if err != nil {
		return buf, err
	}
	base := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	n := (uint64(len(b)) + pageSize - 1) / pageSize
	if !noPagemapScan.Load() {
		err := pagemapScan(f, base, base+n*pageSize, page)
		if err == nil {
			return buf, nil
		}
		if !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
			return buf, fmt.Errorf("wasm: pagemap scan: %w", err)
		}
		noPagemapScan.Store(true)
	}
	if uint64(cap(buf)) < 8*n {
		buf = make([]byte, 8*n)
	}
	buf = buf[:8*n]
	if _, err := f.ReadAt(buf, int64(base/pageSize*8)); err != nil {
		return buf, fmt.Errorf("wasm: read pagemap: %w", err)
	}
	for i := uint64(0); i < n; i++ {
		e := binary.LittleEndian.Uint64(buf[8*i:])
		if e&pagemapSwapped != 0 || e&pagemapPresent != 0 && e&pagemapFileOrSh == 0 {
			page(i)
		}
	}
	return buf, nil
}

// noPagemapScan is set once the kernel has refused PAGEMAP_SCAN.
var noPagemapScan atomic.Bool

// PAGEMAP_SCAN (include/uapi/linux/fs.h): _IOWR('f', 16, struct pm_scan_arg).
const (
	ioctlPagemapScan = 0xC0606610
	pageIsFile       = 1 << 2
	pageIsPresent    = 1 << 3
	pageIsSwapped    = 1 << 4
)

// pmScanArg is struct pm_scan_arg.
type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages   uint64
	categoryInverted, categoryMask, categoryAnyOf, returnMask uint64
}

// pageRegion is struct page_region.
type pageRegion struct{ start, end, categories uint64 }

// pagemapScan calls page for the index (from start) of each page in
// [start, end) that is not file-backed and is present or swapped.
func pagemapScan(f *os.File, start, end uint64, page func(i uint64)) error {
	var regions [32]pageRegion
	arg := pmScanArg{
		size:             uint64(unsafe.Sizeof(pmScanArg{})),
		start:            start,
		end:              end,
		vec:              uint64(uintptr(unsafe.Pointer(&regions[0]))),
		vecLen:           uint64(len(regions)),
		categoryInverted: pageIsFile,
		categoryMask:     pageIsFile,
		categoryAnyOf:    pageIsPresent | pageIsSwapped,
		returnMask:       pageIsPresent | pageIsSwapped,
	}
	for arg.start < end {
		n, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ioctlPagemapScan, uintptr(unsafe.Pointer(&arg)))
		runtime.KeepAlive(&regions) // arg.vec points at it
		if errno != 0 {
			return errno
		}
		for _, r := range regions[:n] {
			for p := r.start; p < r.end; p += pageSize {
				page((p - start) / pageSize)
			}
		}
		if arg.walkEnd <= arg.start {
			break
		}
		arg.start = arg.walkEnd
	}
	return nil
}

// privatePages returns the bytes of b's pages that are private: the pages
// an instance wrote; 0 if unknown.
func privatePages(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	var pages uint64
	if _, err := scanPrivate(b, nil, func(uint64) { pages++ }); err != nil {
		return 0
	}
	return pages * pageSize
}
