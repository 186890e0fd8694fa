package wasm

import (
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// memoryLimit allocates an instance's linear memory and enforces the
// function's memory limit. It reserves the whole limit as one private,
// lazily-populated mapping, so growing never copies and untouched pages
// cost nothing; a grow past the limit fails (memory.grow returns -1) and is
// remembered, so the failure is reported as kind "oom".
type memoryLimit struct {
	limit    uint64
	mapped   []byte // from mmap, unmapped by free
	heap     []byte // fallback when mmap fails
	exceeded bool
}

var _ experimental.MemoryAllocator = (*memoryLimit)(nil)

// Allocate implements experimental.MemoryAllocator. One memoryLimit backs
// one instance's single memory.
func (m *memoryLimit) Allocate(cap, max uint64) experimental.LinearMemory {
	reserve := m.limit
	if max < reserve {
		reserve = max
	}
	if reserve > 0 {
		b, err := syscall.Mmap(-1, 0, int(reserve), syscall.PROT_READ|syscall.PROT_WRITE,
			syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
		if err == nil {
			m.mapped = b
		}
	}
	return m
}

// Reallocate implements experimental.LinearMemory.
func (m *memoryLimit) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.exceeded = true
		return nil
	}
	if m.mapped != nil {
		if size > uint64(len(m.mapped)) {
			return nil // beyond the module's own maximum
		}
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

// Free implements experimental.LinearMemory. The daemon frees explicitly
// after closing the module (free), so this is a no-op.
func (m *memoryLimit) Free() {}

func (m *memoryLimit) free() {
	if m.mapped != nil {
		_ = syscall.Munmap(m.mapped)
		m.mapped = nil
	}
	m.heap = nil
}
