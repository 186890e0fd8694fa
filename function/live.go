package function

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
)

// liveLog holds what a running invocation has written to stdout and
// stderr, for followers (GET /v1/invocations/{id}/logs?follow=true). It
// keeps at most maxStderrBytes; a follower that falls further behind
// resumes at the oldest byte kept.
type liveLog struct {
	mu      sync.Mutex
	buf     []byte
	dropped int64         // bytes discarded from the front
	changed chan struct{} // closed and replaced on every write
	done    bool
	running atomic.Bool // the invocation has started (not just been accepted)
}

// startLive registers the live log of invocation id, or returns the one
// registered when an asynchronous invocation was accepted (so followers
// can wait for a queued invocation to start).
func (s *Service) startLive(id string) *liveLog {
	v, _ := s.live.LoadOrStore(id, &liveLog{changed: make(chan struct{})})
	return v.(*liveLog)
}

// endLive marks the invocation's output complete; it is idempotent.
func (s *Service) endLive(id string) {
	v, ok := s.live.LoadAndDelete(id)
	if !ok {
		return
	}
	l := v.(*liveLog)
	l.mu.Lock()
	if !l.done {
		l.done = true
		close(l.changed)
	}
	l.mu.Unlock()
}

func (l *liveLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return len(p), nil
	}
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - maxStderrBytes; over > 0 {
		l.buf = l.buf[over:]
		l.dropped += int64(over)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// tee writes to w and to the live log; the live log never fails a write.
func (l *liveLog) tee(w io.Writer) io.Writer { return teeWriter{w: w, l: l} }

type teeWriter struct {
	w io.Writer
	l *liveLog
}

func (t teeWriter) Write(p []byte) (int, error) {
	t.l.Write(p)
	return t.w.Write(p)
}

// follow copies the log to w from the start, then as it grows, until the
// invocation ends or ctx is done. flush is called after each write.
func (l *liveLog) follow(ctx context.Context, w io.Writer, flush func()) error {
	var off int64
	for {
		l.mu.Lock()
		start := max(off-l.dropped, 0)
		chunk := append([]byte(nil), l.buf[start:]...)
		off = l.dropped + int64(len(l.buf))
		done, changed := l.done, l.changed
		l.mu.Unlock()
		if len(chunk) > 0 {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
			flush()
		}
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// FollowInvocation streams a running invocation's output (stdout and
// stderr as written) to w until it ends; for an invocation that is not
// running it writes the logged stderr and returns. It reports whether the
// invocation was running.
func (s *Service) FollowInvocation(ctx context.Context, id string, w io.Writer, flush func()) (bool, error) {
	if v, ok := s.live.Load(id); ok {
		return true, v.(*liveLog).follow(ctx, w, flush)
	}
	inv, err := s.Invocation(id)
	if err != nil {
		return false, err
	}
	if s.logs != nil {
		if err := s.logs.ReadInvocation(inv.Function, id, w); err != nil {
			return false, err
		}
	}
	return false, nil
}
