package api

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// PageSetKind names one of a snapshot's page sets: the last element of its
// path, /v1/snapshots/{id}/{kind}.
type PageSetKind string

// A snapshot's page sets.
const (
	LoadingSet PageSetKind = "loading-set" // FaaSnap: pages found resident, scan by scan
	WorkingSet PageSetKind = "working-set" // REAP: pages a restored VM touched
)

// PageSet is a set of pages of a snapshot's memory file, in the order
// they should be fetched: a FaaSnap loading set (pages found resident by
// successive mincore scans, scan by scan) or a REAP working set (the pages
// a restored VM touched, in address order).
type PageSet struct {
	// PageSize is the size of one page in bytes.
	PageSize int `json:"pageSize"`
	// Extents are runs of consecutive pages.
	Extents []Extent `json:"extents"`
}

// Extent is a run of Pages pages starting at page index Start.
type Extent struct {
	Start uint64 `json:"start"`
	Pages uint64 `json:"pages"`
}

// Pages is the number of pages in the set.
func (s PageSet) Pages() uint64 {
	var n uint64
	for _, e := range s.Extents {
		n += e.Pages
	}
	return n
}

// Bytes is the memory the set covers.
func (s PageSet) Bytes() uint64 { return s.Pages() * uint64(s.PageSize) }

// Union returns s with the pages of o it lacks appended, in o's order:
// s's extents first, unchanged, so a loading set keeps its layer order and
// the added pages are fetched last. A page in both sets, or twice in o, is
// kept once. The sets must have the same page size; an empty set without
// one takes the other's.
func (s PageSet) Union(o PageSet) (PageSet, error) {
	ps := s.PageSize
	if ps == 0 {
		ps = o.PageSize
	}
	if o.PageSize != 0 && o.PageSize != ps {
		return PageSet{}, fmt.Errorf("page set: union of %d-byte and %d-byte pages", ps, o.PageSize)
	}
	out := PageSet{PageSize: ps, Extents: slices.Clone(s.Extents)}
	for _, es := range [][]Extent{s.Extents, o.Extents} {
		for _, e := range es {
			if e.Start+e.Pages < e.Start {
				return PageSet{}, fmt.Errorf("page set: extent %d+%d overflows", e.Start, e.Pages)
			}
		}
	}
	covered := MergeExtents(s.Extents, 0) // sorted, disjoint, not touching
	for _, e := range o.Extents {
		if e.Pages == 0 {
			continue
		}
		for _, r := range subtractExtents(covered, e) {
			if n := len(out.Extents); n > 0 && out.Extents[n-1].Start+out.Extents[n-1].Pages == r.Start {
				out.Extents[n-1].Pages += r.Pages
				continue
			}
			out.Extents = append(out.Extents, r)
		}
		covered = insertExtent(covered, e)
	}
	return out, nil
}

// subtractExtents returns the runs of e not in covered (sorted, disjoint),
// in address order.
func subtractExtents(covered []Extent, e Extent) []Extent {
	var out []Extent
	cur, end := e.Start, e.Start+e.Pages
	i, _ := slices.BinarySearchFunc(covered, cur, func(c Extent, p uint64) int {
		if c.Start+c.Pages <= p {
			return -1
		}
		return 1
	})
	for ; i < len(covered) && covered[i].Start < end; i++ {
		if covered[i].Start > cur {
			out = append(out, Extent{Start: cur, Pages: covered[i].Start - cur})
		}
		cur = max(cur, covered[i].Start+covered[i].Pages)
	}
	if cur < end {
		out = append(out, Extent{Start: cur, Pages: end - cur})
	}
	return out
}

// insertExtent adds e to covered (sorted, disjoint, not touching), merging
// the extents it overlaps or touches.
func insertExtent(covered []Extent, e Extent) []Extent {
	start, end := e.Start, e.Start+e.Pages
	// i: the first extent that ends at or after start; j: the first that
	// starts after end.
	i, _ := slices.BinarySearchFunc(covered, start, func(c Extent, p uint64) int {
		if c.Start+c.Pages < p {
			return -1
		}
		return 1
	})
	j := i
	for ; j < len(covered) && covered[j].Start <= end; j++ {
		start = min(start, covered[j].Start)
		end = max(end, covered[j].Start+covered[j].Pages)
	}
	return slices.Replace(covered, i, j, Extent{Start: start, Pages: end - start})
}

// MergeExtents returns the extents sorted by start, those that overlap or
// are separated by at most gap pages joined into one: with gap 0, the
// pages of in as disjoint runs; with a larger gap, fewer and larger reads
// of the memory file at the cost of the holes. in is not modified.
func MergeExtents(in []Extent, gap uint64) []Extent {
	es := slices.Clone(in)
	slices.SortFunc(es, func(a, b Extent) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	var out []Extent
	for _, e := range es {
		if n := len(out); n > 0 && e.Start <= out[n-1].Start+out[n-1].Pages+gap {
			if end := e.Start + e.Pages; end > out[n-1].Start+out[n-1].Pages {
				out[n-1].Pages = end - out[n-1].Start
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

// Validate checks the set against a memory file of size bytes: the page
// size must be a power of two, and every extent non-empty and within the
// file.
func (s PageSet) Validate(size int64) error {
	if s.PageSize <= 0 || s.PageSize&(s.PageSize-1) != 0 {
		return fmt.Errorf("page set: page size %d is not a power of two", s.PageSize)
	}
	limit := uint64(size) / uint64(s.PageSize)
	for _, e := range s.Extents {
		if e.Pages == 0 || e.Start+e.Pages > limit || e.Start+e.Pages < e.Start {
			return fmt.Errorf("page set: extent %d+%d outside the %d pages of the memory file", e.Start, e.Pages, limit)
		}
	}
	return nil
}

// pageSetMagic starts the compact file form of a PageSet.
const pageSetMagic = "KPS1"

// MarshalBinary encodes the set compactly: a magic, the page size, the
// number of extents, then each extent as a signed delta from the end of
// the previous one and a length, all varints. A working set of a few
// thousand pages takes a few kilobytes.
func (s PageSet) MarshalBinary() ([]byte, error) {
	b := []byte(pageSetMagic)
	b = binary.AppendUvarint(b, uint64(s.PageSize))
	b = binary.AppendUvarint(b, uint64(len(s.Extents)))
	var end uint64
	for _, e := range s.Extents {
		b = binary.AppendVarint(b, int64(e.Start-end))
		b = binary.AppendUvarint(b, e.Pages)
		end = e.Start + e.Pages
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary encoded.
func (s *PageSet) UnmarshalBinary(b []byte) error {
	if !bytes.HasPrefix(b, []byte(pageSetMagic)) {
		return errors.New("page set: bad magic")
	}
	r := bytes.NewReader(b[len(pageSetMagic):])
	ps, err := binary.ReadUvarint(r)
	if err != nil || ps == 0 || ps > 1<<30 {
		return fmt.Errorf("page set: bad page size")
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || n > uint64(r.Len()) {
		return fmt.Errorf("page set: bad extent count")
	}
	out := PageSet{PageSize: int(ps), Extents: make([]Extent, 0, n)}
	var end uint64
	for i := uint64(0); i < n; i++ {
		d, err1 := binary.ReadVarint(r)
		l, err2 := binary.ReadUvarint(r)
		if err1 != nil || err2 != nil || l == 0 {
			return fmt.Errorf("page set: extent %d is truncated", i)
		}
		start := end + uint64(d)
		out.Extents = append(out.Extents, Extent{Start: start, Pages: l})
		end = start + l
	}
	*s = out
	return nil
}
