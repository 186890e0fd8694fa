package shim

import (
	"context"
	"io"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/fifo"
)

// TestOutputDrainsBeforeClose: closing an output FIFO waits until the
// client has read what the guest wrote, even when the client's reader
// opens late; containerd's client would otherwise drop it.
func TestOutputDrainsBeforeClose(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "stdout")
	// The client creates the FIFO and opens its end in the background.
	r, err := fifo.OpenFifo(ctx, p, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := openOutput(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		_ = w.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("closed with unread output")
	case <-time.After(50 * time.Millisecond):
	}
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
	select {
	case <-closed:
	case <-time.After(time.Second):
		t.Fatal("close did not return once drained")
	}
}
