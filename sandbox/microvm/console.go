package microvm

import (
	"bytes"
	"context"
	"io"
	"sync"
)

// consoleKeep bounds how much of a guest's console output is kept.
const consoleKeep = 64 << 10

// console collects a guest's serial console output (kernel messages and
// the agent's own lines) and lets callers wait for a line to appear:
// readiness is signalled, never polled.
type console struct {
	mu      sync.Mutex
	buf     []byte // the last consoleKeep bytes
	total   int64  // bytes received so far
	changed chan struct{}
	eof     bool
}

func newConsole() *console { return &console{changed: make(chan struct{})} }

// run copies r into the console until r ends.
func (c *console) run(r io.Reader) {
	b := make([]byte, 4096)
	for {
		n, err := r.Read(b)
		c.mu.Lock()
		if n > 0 {
			c.buf = append(c.buf, b[:n]...)
			if over := len(c.buf) - consoleKeep; over > 0 {
				c.buf = append(c.buf[:0], c.buf[over:]...)
			}
			c.total += int64(n)
		}
		if err != nil {
			c.eof = true
		}
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// offset is the number of bytes received so far: a mark to search from.
func (c *console) offset() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// since returns the kept output from offset off on.
func (c *console) since(off int64) []byte {
	start := c.total - int64(len(c.buf))
	if off < start {
		off = start
	}
	return c.buf[off-start:]
}

// find reports where s first appears at or after off, and the offset
// just past it.
func (c *console) find(off int64, s string) (end int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.findLocked(off, s)
}

func (c *console) findLocked(off int64, s string) (int64, bool) {
	b := c.since(off)
	i := bytes.Index(b, []byte(s))
	if i < 0 {
		return 0, false
	}
	return c.total - int64(len(b)) + int64(i+len(s)), true
}

// waitFor waits until s appears at or after off and returns the offset
// just past it. It fails when ctx ends, when stop closes or when the
// console closes (the VM exited) first.
func (c *console) waitFor(ctx context.Context, off int64, s string, stop <-chan struct{}) (int64, error) {
	for {
		c.mu.Lock()
		end, ok := c.findLocked(off, s)
		eof, changed := c.eof, c.changed
		c.mu.Unlock()
		switch {
		case ok:
			return end, nil
		case eof:
			return 0, io.EOF
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-stop:
			return 0, io.EOF
		}
	}
}

// tail returns the last n bytes of output, for error messages.
func (c *console) tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.buf
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}

// lines returns the kept lines that contain s, at most max of them (the
// last ones): the agent's own lines, which a kernel panic's trace would
// push out of the tail.
func (c *console) lines(s string, max int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range bytes.Split(c.buf, []byte("\n")) {
		if bytes.Contains(l, []byte(s)) {
			out = append(out, string(bytes.TrimSpace(l)))
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}
