package wasm

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// memoryLimit allocates an instance's linear memory and enforces the
// function's memory limit. It reserves the whole limit as one private,
// lazily-populated mapping, so growing never copies and untouched pages
// cost nothing; a grow past the limit fails (memory.grow returns -1) and is
// remembered, so the failure is reported as kind "oom".
//
// With an image (a snapshot's memory), the start of the reservation maps
// the image file privately: the instance reads the snapshot's pages from
// the page cache, shared with every other instance, and copies only the
// pages it writes. The memoryLimit holds a reference on the image, which
// free drops.
type memoryLimit struct {
	limit    uint64
	image    *memImage
	spares   *spares // where a command instance's reservation comes from and goes back to; nil: mmap and munmap
	mapped   []byte  // from mmap, unmapped by free
	used     uint64  // the largest size handed to the instance: all it can have written
	heap     []byte  // fallback when mmap fails
	started  bool
	exceeded bool
	pagemap  []byte // reset's scan buffer, kept between resets
}

// resetCopyMax bounds the private bytes a reset copies back from the
// image; beyond it, remapping the image (and faulting pages in again) is
// the cheaper reset.
const resetCopyMax = 1 << 20

var _ experimental.MemoryAllocator = (*memoryLimit)(nil)

// Allocate implements experimental.MemoryAllocator. One memoryLimit backs
// one instance's single memory.
func (m *memoryLimit) Allocate(capacity, maxBytes uint64) experimental.LinearMemory {
	reserve := min(m.limit, maxBytes)
	if m.image != nil {
		reserve = max(reserve, m.image.size)
	}
	if reserve == 0 {
		return m
	}
	var b []byte
	if m.image == nil && m.spares != nil {
		b = m.spares.get(reserve)
	}
	if b == nil {
		var err error
		b, err = unix.Mmap(-1, 0, int(reserve), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
		if err != nil {
			return m
		}
	}
	if m.image != nil && m.image.size > 0 {
		_, err := unix.MmapPtr(int(m.image.f.Fd()), 0, unsafe.Pointer(&b[0]), uintptr(m.image.size),
			unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED)
		if err != nil {
			_ = unix.Munmap(b)
			return m // Reallocate fails: instantiation reports it
		}
	}
	m.mapped = b
	return m
}

// Reallocate implements experimental.LinearMemory.
func (m *memoryLimit) Reallocate(size uint64) []byte {
	if m.image != nil && !m.started {
		// The first call sizes the memory at instantiation: a restored
		// instance starts with all of the snapshot's pages.
		m.started = true
		if m.mapped == nil {
			return nil
		}
		size = max(size, m.image.size)
	}
	if size > m.limit {
		m.exceeded = true
		return nil
	}
	if m.mapped != nil {
		if size > uint64(len(m.mapped)) {
			return nil // beyond the module's own maximum
		}
		m.used = max(m.used, size)
		return m.mapped[:size]
	}
	if size <= uint64(cap(m.heap)) {
		m.heap = m.heap[:size]
		return m.heap
	}
	n := make([]byte, size, max(size, 2*uint64(cap(m.heap))))
	copy(n, m.heap)
	m.heap = n
	return m.heap
}

// Free implements experimental.LinearMemory. It is a no-op: wazero may
// call it from the goroutine that watches the context while the guest still
// runs; the instance's owner calls free once the guest has returned.
func (m *memoryLimit) Free() {}

// reset returns the memory, sized as the image, to the image's contents
// and reports the bytes the instance had made private. Pages the instance
// wrote stay mapped and get the image's contents copied back into them,
// so the next request touches them without a page fault; the pages it only
// read still map the image. That is the cheap reset: a page fault costs
// microseconds on virtualized hosts, and a Go guest touches the same few
// dozen pages on every request. An instance that made more than
// resetCopyMax private maps the image again instead, giving them back.
func (m *memoryLimit) reset() (private uint64, err error) {
	if m.mapped == nil || m.image == nil || m.image.data == nil {
		return 0, fmt.Errorf("wasm: no image mapping to reset")
	}
	mem, img := m.mapped[:m.image.size], m.image.data
	var pages []uint64
	var stack [256]uint64
	pages = stack[:0]
	m.pagemap, err = scanPrivate(mem, m.pagemap, func(i uint64) { pages = append(pages, i) })
	if err != nil {
		return 0, err
	}
	private = uint64(len(pages)) * pageSize
	if private > resetCopyMax {
		return private, m.remapImage()
	}
	for _, i := range pages {
		off := i * pageSize
		end := min(off+pageSize, uint64(len(mem)))
		copy(mem[off:end], img[off:end])
	}
	return private, nil
}

// remapImage maps the image again over the start of the memory, dropping
// every page the instance wrote there; the memory is the image again.
func (m *memoryLimit) remapImage() error {
	if m.mapped == nil || m.image == nil {
		return fmt.Errorf("wasm: no image mapping to reset")
	}
	_, err := unix.MmapPtr(int(m.image.f.Fd()), 0, unsafe.Pointer(&m.mapped[0]), uintptr(m.image.size),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED)
	if err != nil {
		return fmt.Errorf("wasm: remap snapshot image: %w", err)
	}
	return nil
}

func (m *memoryLimit) free() {
	if m.mapped != nil {
		if m.image != nil || m.spares == nil || !m.spares.put(m.mapped, m.used) {
			_ = unix.Munmap(m.mapped)
		}
		m.mapped = nil
	}
	m.heap = nil
	if m.image != nil {
		_ = m.image.release()
		m.image = nil
	}
}

// touched returns the bytes of memory the instance made private (written
// pages: copy-on-write copies of the image, and zero pages it filled),
// read from /proc/self/pagemap; 0 if unknown. In a reused reservation (see
// spares) it also counts the pages an earlier instance populated and this
// one got zeroed: they are resident all the same. It costs a read of 8 bytes
// per 4 KiB page of the memory's current size, so callers ask for it only
// when measuring.
func (m *memoryLimit) touched(size uint64) uint64 {
	if m.mapped == nil || size == 0 {
		return 0
	}
	return privatePages(m.mapped[:min(size, uint64(len(m.mapped)))])
}

// spares keeps the memory reservations of finished command instances for
// the next instances, each handed back zeroed. An mmap and an munmap per
// instance cost more than the instance itself under load: both take the
// process's address-space lock for writing, stalling every other thread's
// page faults, and the munmap's TLB shootdown interrupts every CPU running
// the daemon. A reservation comes back as it was handed out — never written
// beyond used — so clearing [0, used) makes it fresh.
type spares struct {
	mu     sync.Mutex
	byLen  map[uint64][][]byte
	n      int
	closed bool // the driver is closed: keep nothing more
}

const (
	// sparesMax bounds the reservations kept (address space only, plus
	// what their last instances touched, up to spareClearMax each).
	sparesMax = 32
	// spareClearMax is the most memory cleared by writing zeros, which
	// keeps the pages for the next instance (a page fault costs more than
	// zeroing a page on a virtualized host); beyond it the pages are given
	// back to the kernel instead (MADV_DONTNEED), which refills them with
	// zeros on their next touch.
	spareClearMax = 1 << 20
)

func (s *spares) get(n uint64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.byLen[n]
	if len(list) == 0 {
		return nil
	}
	b := list[len(list)-1]
	s.byLen[n] = list[:len(list)-1]
	s.n--
	return b
}

// put zeroes b's first used bytes and keeps it, or reports false when the
// pool is full or closed or the zeroing failed; the caller then unmaps b.
func (s *spares) put(b []byte, used uint64) bool {
	s.mu.Lock()
	full := s.closed || s.n >= sparesMax
	if !full {
		s.n++ // claimed now, listed once clean
	}
	s.mu.Unlock()
	if full {
		return false
	}
	used = min(used, uint64(len(b)))
	ok := true
	if used <= spareClearMax {
		clear(b[:used])
	} else if err := unix.Madvise(b[:used], unix.MADV_DONTNEED); err != nil {
		ok = false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok || s.closed {
		s.n--
		return false
	}
	if s.byLen == nil {
		s.byLen = map[uint64][][]byte{}
	}
	s.byLen[uint64(len(b))] = append(s.byLen[uint64(len(b))], b)
	return true
}

// close unmaps every kept reservation; later ones are not kept.
func (s *spares) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for n, list := range s.byLen {
		for _, b := range list {
			_ = unix.Munmap(b)
		}
		delete(s.byLen, n)
	}
	s.n = 0
}
