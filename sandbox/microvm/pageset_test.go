package microvm

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPageSet_Binary(t *testing.T) {
	sets := []PageSet{
		{PageSize: 4096},
		{PageSize: 4096, Extents: []Extent{{Start: 0, Pages: 1}}},
		// Layers of a loading set go back and forth in the file.
		{PageSize: 4096, Extents: []Extent{{Start: 100, Pages: 3}, {Start: 7, Pages: 2}, {Start: 32767, Pages: 1}}},
	}
	for _, s := range sets {
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got PageSet
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if len(s.Extents) == 0 {
			s.Extents = []Extent{}
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("round trip: got %+v, want %+v", got, s)
		}
	}
	for _, bad := range []string{"", "KPS", "XXXX\x01\x00", "KPS1\x00\x00", "KPS1\x80\x20\x05\x00"} {
		var s PageSet
		if err := s.UnmarshalBinary([]byte(bad)); err == nil {
			t.Errorf("UnmarshalBinary(%q) succeeded: %+v", bad, s)
		}
	}
}

// FuzzPageSet feeds the decoder of the working-set and loading-set files
// arbitrary bytes: it must not panic, and what it accepts must encode
// back to a set that decodes the same.
func FuzzPageSet(f *testing.F) {
	b, _ := PageSet{PageSize: 4096, Extents: []Extent{{Start: 5, Pages: 2}, {Start: 1, Pages: 1}}}.MarshalBinary()
	f.Add(b)
	f.Add([]byte("KPS1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s PageSet
		if s.UnmarshalBinary(b) != nil {
			return
		}
		_ = s.validate(128 << 20)
		again, _ := s.MarshalBinary()
		var s2 PageSet
		if err := s2.UnmarshalBinary(again); err != nil || !reflect.DeepEqual(s, s2) {
			t.Fatalf("re-encoding %+v: %+v, %v", s, s2, err)
		}
	})
}

func TestPageSet_Validate(t *testing.T) {
	const size = 16 << 12 // 16 pages
	ok := PageSet{PageSize: 4096, Extents: []Extent{{Start: 15, Pages: 1}}}
	if err := ok.validate(size); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []PageSet{
		{PageSize: 4095},
		{PageSize: 4096, Extents: []Extent{{Start: 15, Pages: 2}}},
		{PageSize: 4096, Extents: []Extent{{Start: 1, Pages: 0}}},
		{PageSize: 4096, Extents: []Extent{{Start: ^uint64(0), Pages: 2}}},
	} {
		if bad.validate(size) == nil {
			t.Errorf("validate(%+v) passed", bad)
		}
	}
}

func TestExtents(t *testing.T) {
	got := extentsOf([]uint64{1, 2, 3, 7, 9, 10})
	want := []Extent{{1, 3}, {7, 1}, {9, 2}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("extentsOf = %v", got)
	}
	merged := mergeExtents([]Extent{{20, 2}, {1, 3}, {5, 1}, {2, 1}}, 1)
	if want := []Extent{{1, 5}, {20, 2}}; !reflect.DeepEqual(merged, want) {
		t.Fatalf("mergeExtents = %v, want %v", merged, want)
	}
}

func TestPageSet_Union(t *testing.T) {
	set := func(ps int, es ...Extent) PageSet { return PageSet{PageSize: ps, Extents: es} }
	tests := []struct {
		name    string
		s, o    PageSet
		want    PageSet
		wantErr bool
	}{
		{"both empty", set(4096), set(4096), set(4096), false},
		{"empty takes the page size", set(0), set(4096, Extent{5, 2}), set(4096, Extent{5, 2}), false},
		{"nothing to add", set(4096, Extent{5, 2}), set(0), set(4096, Extent{5, 2}), false},
		{"disjoint, s's order first", set(4096, Extent{50, 2}, Extent{10, 1}), set(4096, Extent{30, 1}, Extent{0, 2}),
			set(4096, Extent{50, 2}, Extent{10, 1}, Extent{30, 1}, Extent{0, 2}), false},
		{"contained adds nothing", set(4096, Extent{10, 10}), set(4096, Extent{12, 3}), set(4096, Extent{10, 10}), false},
		{"overlaps add the difference", set(4096, Extent{10, 5}, Extent{20, 5}), set(4096, Extent{8, 20}),
			set(4096, Extent{10, 5}, Extent{20, 5}, Extent{8, 2}, Extent{15, 5}, Extent{25, 3}), false},
		{"touching runs join", set(4096, Extent{10, 5}), set(4096, Extent{15, 5}), set(4096, Extent{10, 10}), false},
		{"o overlapping itself", set(4096), set(4096, Extent{0, 4}, Extent{2, 4}, Extent{1, 1}),
			set(4096, Extent{0, 6}), false},
		{"zero-page extents of o are dropped", set(4096, Extent{1, 1}), set(4096, Extent{7, 0}), set(4096, Extent{1, 1}), false},
		{"page sizes differ", set(4096, Extent{1, 1}), set(2<<20, Extent{1, 1}), PageSet{}, true},
		{"overflow", set(4096), set(4096, Extent{^uint64(0), 2}), PageSet{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.s.Union(tc.o)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Union error = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if got.PageSize != tc.want.PageSize || !slices.Equal(got.Extents, tc.want.Extents) {
				t.Fatalf("Union = %+v, want %+v", got, tc.want)
			}
			// The union covers exactly the pages of both.
			pages := map[uint64]bool{}
			for _, e := range append(slices.Clone(tc.s.Extents), tc.o.Extents...) {
				for p := e.Start; p < e.Start+e.Pages; p++ {
					pages[p] = true
				}
			}
			if got.Pages() != uint64(len(pages)) {
				t.Errorf("union has %d pages, the sets %d distinct ones", got.Pages(), len(pages))
			}
		})
	}
}

// TestLoadingSetRecorder: pages read after the recorder starts form its
// layers, in the order they were read; what was cached before does not
// count. Prefetching and dropping move pages in and out of the cache.
func TestLoadingSetRecorder(t *testing.T) {
	ps := os.Getpagesize()
	path := filepath.Join(t.TempDir(), "mem")
	data := []byte(strings.Repeat("x", 64*ps))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := dropCache(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM) // no readahead: exact pages
	f.ReadAt(make([]byte, 1), 3*int64(ps))            // cached before: not in the set
	rec, err := newLoadingSetRecorder(f, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.close()
	f.ReadAt(make([]byte, 1), 40*int64(ps))
	rec.scan()
	f.ReadAt(make([]byte, 1), 10*int64(ps))
	rec.scan()
	set := rec.result()
	if want := []Extent{{40, 1}, {10, 1}}; !reflect.DeepEqual(set.Extents, want) {
		t.Skipf("page cache residency is not exact on this filesystem: got %v, want %v", set.Extents, want)
	}
	if err := dropCache(path); err != nil {
		t.Fatal(err)
	}
	if err := prefetchSync(f, set, 2); err != nil {
		t.Fatal(err)
	}
	r, _ := newResidency(f, int64(len(data)))
	defer r.close()
	vec, _ := r.scan()
	if vec[40]&1 == 0 || vec[10]&1 == 0 {
		t.Errorf("prefetched pages not resident")
	}
	if err := prefetchAsync(f, set); err != nil {
		t.Fatal(err)
	}
}

func TestConsole(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := newConsole()
	go c.run(r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		w.Write([]byte("boot noise\nkindling-agent: wa"))
		time.Sleep(10 * time.Millisecond)
		w.Write([]byte("iting for the host\n")) // a line split across reads
	}()
	end, err := c.waitFor(ctx, 0, lineWaiting, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.find(end, lineWaiting); ok {
		t.Error("found the same line again past its end")
	}
	w.Close()
	if _, err := c.waitFor(ctx, end, lineWaiting, nil); err == nil {
		t.Error("waitFor did not fail at end of stream")
	}
	if !strings.HasSuffix(c.tail(100), "waiting for the host") {
		t.Errorf("tail = %q", c.tail(100))
	}
}
