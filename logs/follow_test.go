package logs

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestFollow(t *testing.T) {
	d := New(t.TempDir(), 0)
	defer d.Close()
	d.Append("fn", "i1", "inv-1", time.Now(), []byte("before\n"))
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuf
	done := make(chan error)
	go func() { done <- d.Follow(ctx, "fn", time.Time{}, &out, func() {}) }()
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; !strings.Contains(out.String(), "after 3"); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("follow saw %q", out.String())
		}
		if i < 3 {
			d.Append("fn", "i2", "inv-2", time.Now(), []byte("after "+string(rune('1'+i))+"\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "inv-1 before") || strings.Count(out.String(), "before") != 1 {
		t.Fatalf("follow output %q", out.String())
	}
}
