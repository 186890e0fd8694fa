package microvm

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestExtentsOf: the pure PageSet methods are tested in package api; what
// stays here builds sets from the page indexes mincore and pagemap give.
func TestExtentsOf(t *testing.T) {
	tests := []struct {
		name  string
		pages []uint64
		want  []Extent
	}{
		{"none", nil, nil},
		{"one", []uint64{4}, []Extent{{Start: 4, Pages: 1}}},
		{"runs", []uint64{1, 2, 3, 7, 9, 10}, []Extent{{Start: 1, Pages: 3}, {Start: 7, Pages: 1}, {Start: 9, Pages: 2}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := extentsOf(tc.pages); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("extentsOf(%v) = %v, want %v", tc.pages, got, tc.want)
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
	if want := []Extent{{Start: 40, Pages: 1}, {Start: 10, Pages: 1}}; !reflect.DeepEqual(set.Extents, want) {
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
