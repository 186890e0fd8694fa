package microvm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kindling-dev/kindling/api"
)

// PageSet is a set of pages of a snapshot's memory file, in fetch order;
// its methods (Union, Validate, MarshalBinary, ...) are package api's.
type PageSet = api.PageSet

// Extent is a run of pages of a PageSet.
type Extent = api.Extent

// extentsOf turns sorted page indexes into extents.
func extentsOf(pages []uint64) []Extent {
	var out []Extent
	for _, p := range pages {
		if n := len(out); n > 0 && out[n-1].Start+out[n-1].Pages == p {
			out[n-1].Pages++
			continue
		}
		out = append(out, Extent{Start: p, Pages: 1})
	}
	return out
}

// residency maps a memory file read-only to ask the kernel which of its
// pages are in the page cache (mincore), as FaaSnap does to find a
// snapshot's loading set.
type residency struct {
	data []byte
	vec  []byte
}

func newResidency(f *os.File, size int64) (*residency, error) {
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", f.Name(), err)
	}
	pages := (size + int64(os.Getpagesize()) - 1) / int64(os.Getpagesize())
	return &residency{data: data, vec: make([]byte, pages)}, nil
}

// scan returns a bitmap (one byte per page, low bit set when resident).
func (r *residency) scan() ([]byte, error) {
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&r.data[0])), uintptr(len(r.data)), uintptr(unsafe.Pointer(&r.vec[0])))
	if errno != 0 {
		return nil, fmt.Errorf("mincore: %w", errno)
	}
	return r.vec, nil
}

func (r *residency) close() { unix.Munmap(r.data) }

// loadingSetRecorder accumulates the layers of a loading set: each scan
// adds the pages that became resident since the previous one.
type loadingSetRecorder struct {
	mu     sync.Mutex
	r      *residency
	seen   []bool
	layers [][]uint64
}

func newLoadingSetRecorder(f *os.File, size int64) (*loadingSetRecorder, error) {
	r, err := newResidency(f, size)
	if err != nil {
		return nil, err
	}
	l := &loadingSetRecorder{r: r, seen: make([]bool, len(r.vec))}
	// What is resident before the VM runs is not its loading set.
	vec, err := r.scan()
	if err != nil {
		r.close()
		return nil, err
	}
	for i, v := range vec {
		l.seen[i] = v&1 != 0
	}
	return l, nil
}

func (l *loadingSetRecorder) scan() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.r == nil {
		return errors.New("loading set: recorder closed")
	}
	vec, err := l.r.scan()
	if err != nil {
		return err
	}
	var layer []uint64
	for i, v := range vec {
		if v&1 != 0 && !l.seen[i] {
			l.seen[i] = true
			layer = append(layer, uint64(i))
		}
	}
	if len(layer) > 0 {
		l.layers = append(l.layers, layer)
	}
	return nil
}

// result is the loading set: layer by layer, each in address order.
func (l *loadingSetRecorder) result() PageSet {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := PageSet{PageSize: os.Getpagesize()}
	for _, layer := range l.layers {
		s.Extents = append(s.Extents, extentsOf(layer)...)
	}
	return s
}

// scanEvery scans every d until the returned function is called, as
// FaaSnap scans while the function runs, so layers follow the order in
// which pages were needed.
func (l *loadingSetRecorder) scanEvery(d time.Duration) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.scan()
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

func (l *loadingSetRecorder) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.r != nil {
		l.r.close()
		l.r = nil
	}
}

// workingSet reads, from /proc/PID/pagemap, which pages of the memory file
// mapped by process pid are present in its address space: every page the
// guest (or QEMU for it) touched since the mapping was made, whether read
// from the page cache or copied on write. This is REAP's working set,
// found without userfaultfd (QEMU's memory cannot be registered from
// outside it).
func workingSet(pid int, memPath string) (PageSet, error) {
	start, end, fileOff, err := findMapping(pid, memPath)
	if err != nil {
		return PageSet{}, err
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return PageSet{}, fmt.Errorf("working set: %w", err)
	}
	defer pm.Close()
	ps := uint64(os.Getpagesize())
	n := (end - start) / ps
	buf := make([]byte, 8*n)
	if _, err := pm.ReadAt(buf, int64(start/ps*8)); err != nil {
		return PageSet{}, fmt.Errorf("working set: read pagemap: %w", err)
	}
	const present, swapped = 1 << 63, 1 << 62
	var pages []uint64
	for i := uint64(0); i < n; i++ {
		if e := binary.LittleEndian.Uint64(buf[8*i:]); e&(present|swapped) != 0 {
			pages = append(pages, fileOff/ps+i)
		}
	}
	return PageSet{PageSize: int(ps), Extents: extentsOf(pages)}, nil
}

// findMapping finds the largest mapping of file path in process pid's
// address space, from /proc/PID/maps.
func findMapping(pid int, path string) (start, end, offset uint64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("working set: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 7f..-7f.. rw-p 00000000 fd:00 1234   /path/to/mem
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || strings.Join(fields[5:], " ") != path {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		o, err3 := strconv.ParseUint(fields[2], 16, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		if e-s > end-start {
			start, end, offset = s, e, o
		}
	}
	if end == 0 {
		return 0, 0, 0, fmt.Errorf("working set: %s is not mapped by process %d", path, pid)
	}
	return start, end, offset, nil
}

// privateBytes is how much of the mapping of path process pid has made
// its own (pages copied on write), from /proc/PID/smaps.
func privateBytes(pid int, path string) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0
	}
	var in bool
	var total uint64
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if strings.Contains(fields[0], "-") && len(fields) >= 5 {
			in = len(fields) >= 6 && strings.Join(fields[5:], " ") == path
			continue
		}
		if in && fields[0] == "Anonymous:" && len(fields) >= 2 {
			kb, _ := strconv.ParseUint(fields[1], 10, 64)
			total += kb << 10
		}
	}
	return total
}

// prefetchAsync asks the kernel to start reading the set's pages of f
// into the page cache (posix_fadvise WILLNEED, in the set's order) and
// returns without waiting: FaaSnap's concurrent loading.
func prefetchAsync(f *os.File, s PageSet) error {
	ps := int64(s.PageSize)
	for _, e := range api.MergeExtents(s.Extents, 0) {
		if err := unix.Fadvise(int(f.Fd()), int64(e.Start)*ps, int64(e.Pages)*ps, unix.FADV_WILLNEED); err != nil {
			return fmt.Errorf("prefetch: fadvise: %w", err)
		}
	}
	return nil
}

// prefetchSync reads the set's pages of f into the page cache with
// workers parallel readers and returns when all are in: REAP's eager
// working-set fetch, done while QEMU starts and before the guest runs.
func prefetchSync(f *os.File, s PageSet, workers int) error {
	ps := int64(s.PageSize)
	// Large sequential reads: merge runs separated by small holes.
	extents := api.MergeExtents(s.Extents, 8)
	jobs := make(chan Extent)
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			buf := make([]byte, 1<<20)
			var err error
			for e := range jobs {
				off, n := int64(e.Start)*ps, int64(e.Pages)*ps
				for n > 0 && err == nil {
					chunk := min(n, int64(len(buf)))
					_, err = f.ReadAt(buf[:chunk], off)
					off, n = off+chunk, n-chunk
				}
			}
			errs <- err
		}()
	}
	for _, e := range extents {
		jobs <- e
	}
	close(jobs)
	var first error
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil && first == nil {
			first = fmt.Errorf("prefetch: %w", err)
		}
	}
	return first
}

// dropCache evicts a file's pages from the page cache (those no process
// maps), as FaaSnap does before measuring a restore from disk. Dirty pages
// are written back first: DONTNEED skips them.
func dropCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("drop cache: fdatasync %s: %w", path, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("drop cache: fadvise %s: %w", path, err)
	}
	return nil
}
