package wasm

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/sandbox"
)

// A command instance's memory reservation goes to the next instance, and
// that instance must find it all zero, whichever way it was cleaned: zeroed
// in place (little memory used) or given back to the kernel (more than
// spareClearMax). The dirty module checks every byte, then fills them all.
func TestReusedMemoryIsZeroed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		grow      string // dirty's stdin: grow by 8*grow pages
		givenBack bool   // its memory is beyond spareClearMax
	}{
		{"one page zeroed", "0", false},
		{"grown, zeroed", "1", false},
		{"grown, given back", "6", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p := prepareInternal(t, "dirty", testmodules.Dirty)
			run := func() error {
				inst, err := p.Start(ctx, nil)
				if err != nil {
					return err
				}
				defer inst.Close(ctx)
				var out bytes.Buffer
				res, err := inst.Invoke(ctx, &sandbox.Request{Stdin: strings.NewReader(tc.grow), Stdout: &out})
				if err != nil {
					return err
				}
				if out.String() != "clean\n" {
					return fmt.Errorf("instance saw %q: an earlier instance's bytes", out.String())
				}
				if big := res.MemoryBytes > spareClearMax; big != tc.givenBack {
					return fmt.Errorf("memory %d bytes: beyond spareClearMax %v, want %v", res.MemoryBytes, big, tc.givenBack)
				}
				return nil
			}
			for range 3 {
				if err := run(); err != nil {
					t.Fatal(err)
				}
			}
			p.d.spares.mu.Lock()
			kept := p.d.spares.n
			p.d.spares.mu.Unlock()
			if kept != 1 {
				t.Fatalf("%d reservations kept after sequential runs, want the one they shared", kept)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 10 {
						if err := run(); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// The pool of reservations is bounded, hands out zeroed memory, and
// closing it (as the driver's Close does) unmaps what it kept.
func TestSparesBounded(t *testing.T) {
	var s spares
	mems := make([]*memoryLimit, sparesMax+4)
	for i := range mems {
		mems[i] = &memoryLimit{limit: 1 << 20, spares: &s}
		mems[i].Allocate(64<<10, 1<<20)
		b := mems[i].Reallocate(64 << 10)
		if b == nil {
			t.Fatal("no memory")
		}
		b[0], b[len(b)-1] = 1, 1
	}
	for _, m := range mems {
		m.free()
	}
	if s.n != sparesMax {
		t.Fatalf("%d reservations kept, want the bound %d", s.n, sparesMax)
	}
	var got [][]byte
	for b := s.get(1 << 20); b != nil; b = s.get(1 << 20) {
		if b[0] != 0 || b[64<<10-1] != 0 {
			t.Fatal("a kept reservation was handed out dirty")
		}
		got = append(got, b)
	}
	if len(got) != sparesMax || s.n != 0 {
		t.Fatalf("handed out %d, %d left", len(got), s.n)
	}
	for _, b := range got {
		s.put(b, 64<<10)
	}
	s.close()
	if s.n != 0 || len(s.byLen) != 0 {
		t.Fatalf("after close: %d kept", s.n)
	}
	if s.put(make([]byte, 64<<10), 0) {
		t.Fatal("a closed pool kept a reservation")
	}
}
