package api

import (
	"reflect"
	"slices"
	"testing"
)

func TestPageSet_Binary(t *testing.T) {
	tests := []struct {
		name string
		set  PageSet
	}{
		{"empty", PageSet{PageSize: 4096}},
		{"one page", PageSet{PageSize: 4096, Extents: []Extent{{Start: 0, Pages: 1}}}},
		// Layers of a loading set go back and forth in the file.
		{"back and forth", PageSet{PageSize: 4096, Extents: []Extent{{Start: 100, Pages: 3}, {Start: 7, Pages: 2}, {Start: 32767, Pages: 1}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.set.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got PageSet
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			want := tc.set
			if len(want.Extents) == 0 {
				want.Extents = []Extent{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip: got %+v, want %+v", got, want)
			}
		})
	}
}

func TestPageSet_UnmarshalBinaryBad(t *testing.T) {
	tests := []struct {
		name string
		b    string
	}{
		{"empty", ""},
		{"short magic", "KPS"},
		{"bad magic", "XXXX\x01\x00"},
		{"zero page size", "KPS1\x00\x00"},
		{"truncated extents", "KPS1\x80\x20\x05\x00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s PageSet
			if err := s.UnmarshalBinary([]byte(tc.b)); err == nil {
				t.Errorf("UnmarshalBinary(%q) succeeded: %+v", tc.b, s)
			}
		})
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
		_ = s.Validate(128 << 20)
		again, _ := s.MarshalBinary()
		var s2 PageSet
		if err := s2.UnmarshalBinary(again); err != nil || !reflect.DeepEqual(s, s2) {
			t.Fatalf("re-encoding %+v: %+v, %v", s, s2, err)
		}
	})
}

func TestPageSet_Validate(t *testing.T) {
	const size = 16 << 12 // 16 pages
	tests := []struct {
		name    string
		set     PageSet
		wantErr bool
	}{
		{"last page", PageSet{PageSize: 4096, Extents: []Extent{{Start: 15, Pages: 1}}}, false},
		{"empty", PageSet{PageSize: 4096}, false},
		{"page size not a power of two", PageSet{PageSize: 4095}, true},
		{"no page size", PageSet{}, true},
		{"past the end", PageSet{PageSize: 4096, Extents: []Extent{{Start: 15, Pages: 2}}}, true},
		{"zero pages", PageSet{PageSize: 4096, Extents: []Extent{{Start: 1, Pages: 0}}}, true},
		{"overflow", PageSet{PageSize: 4096, Extents: []Extent{{Start: ^uint64(0), Pages: 2}}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.set.Validate(size); (err != nil) != tc.wantErr {
				t.Errorf("Validate(%+v) = %v, want error %v", tc.set, err, tc.wantErr)
			}
		})
	}
}

func TestPageSet_PagesBytes(t *testing.T) {
	tests := []struct {
		name                 string
		set                  PageSet
		wantPages, wantBytes uint64
	}{
		{"empty", PageSet{PageSize: 4096}, 0, 0},
		{"two extents", PageSet{PageSize: 4096, Extents: []Extent{{Start: 9, Pages: 3}, {Start: 1, Pages: 2}}}, 5, 5 * 4096},
		{"huge pages", PageSet{PageSize: 2 << 20, Extents: []Extent{{Start: 0, Pages: 2}}}, 2, 4 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.set.Pages(); got != tc.wantPages {
				t.Errorf("Pages = %d, want %d", got, tc.wantPages)
			}
			if got := tc.set.Bytes(); got != tc.wantBytes {
				t.Errorf("Bytes = %d, want %d", got, tc.wantBytes)
			}
		})
	}
}

func TestMergeExtents(t *testing.T) {
	tests := []struct {
		name string
		in   []Extent
		gap  uint64
		want []Extent
	}{
		{"empty", nil, 0, nil},
		{"sorts, joins overlaps and small gaps", []Extent{{20, 2}, {1, 3}, {5, 1}, {2, 1}}, 1, []Extent{{1, 5}, {20, 2}}},
		{"gap 0 joins touching runs only", []Extent{{5, 1}, {1, 3}, {4, 1}}, 0, []Extent{{1, 5}}},
		{"gap 0 keeps holes", []Extent{{5, 1}, {1, 3}}, 0, []Extent{{1, 3}, {5, 1}}},
		{"contained", []Extent{{1, 10}, {3, 2}}, 0, []Extent{{1, 10}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			got := MergeExtents(tc.in, tc.gap)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("MergeExtents(%v, %d) = %v, want %v", tc.in, tc.gap, got, tc.want)
			}
			if !slices.Equal(in, tc.in) {
				t.Errorf("MergeExtents modified its input: %v, was %v", tc.in, in)
			}
		})
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
