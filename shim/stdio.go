package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/fifo"
	"golang.org/x/sys/unix"
)

// stdioPaths are a process's standard streams as containerd names them:
// FIFO paths (what ctr and the CRI plugin create), file:// URIs, or empty
// for none. With a terminal, stdout carries stderr too.
type stdioPaths struct {
	stdin, stdout, stderr string
	terminal              bool
}

// stdio is a process's opened standard streams. Output goes straight from
// the guest's fd_write to the FIFO: no copy in the shim.
type stdio struct {
	stdin          io.Reader // nil when the process has no stdin
	stdout, stderr io.Writer
	in             *stdinPump
	closers        []io.Closer
	closeOnce      sync.Once
}

// openStdio opens the streams named by p. A stream that fails to open
// closes the ones already opened.
func openStdio(ctx context.Context, p stdioPaths) (_ *stdio, err error) {
	s := &stdio{stdout: io.Discard, stderr: io.Discard}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if p.stdin != "" {
		in, err := openStdin(ctx, p.stdin)
		if err != nil {
			return nil, fmt.Errorf("open stdin: %w", err)
		}
		s.in, s.stdin = in, in
		s.closers = append(s.closers, in)
	}
	if p.stdout != "" {
		w, err := openOutput(ctx, p.stdout)
		if err != nil {
			return nil, fmt.Errorf("open stdout: %w", err)
		}
		s.stdout = w
		s.closers = append(s.closers, w)
	}
	switch {
	case p.terminal:
		s.stderr = s.stdout // a terminal has one output stream
	case p.stderr != "" && p.stderr == p.stdout:
		s.stderr = s.stdout
	case p.stderr != "":
		w, err := openOutput(ctx, p.stderr)
		if err != nil {
			return nil, fmt.Errorf("open stderr: %w", err)
		}
		s.stderr = w
		s.closers = append(s.closers, w)
	}
	return s, nil
}

// closeStdin ends the process's stdin once what the client already wrote
// has been read (CloseIO).
func (s *stdio) closeStdin() {
	if s.in != nil {
		s.in.closeWrite()
	}
}

// close closes every stream; the readers on containerd's side see EOF.
func (s *stdio) close() {
	s.closeOnce.Do(func() {
		for _, c := range s.closers {
			_ = c.Close()
		}
	})
}

// openOutput opens a stdout or stderr destination for writing.
func openOutput(ctx context.Context, uri string) (io.WriteCloser, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("parse %q: %v: %w", uri, err, errdefs.ErrInvalidArgument)
	}
	switch u.Scheme {
	case "", "fifo":
		p := uri
		if u.Scheme != "" {
			p = u.Path
		}
		f, err := fifo.OpenFifo(ctx, p, syscall.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("open fifo %s: %w", p, err)
		}
		return drainingFIFO{f}, nil
	case "file":
		if err := os.MkdirAll(filepath.Dir(u.Path), 0o755); err != nil {
			return nil, fmt.Errorf("create log directory: %w", err)
		}
		f, err := os.OpenFile(u.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("open log file: %w", err)
		}
		return f, nil
	default:
		return nil, fmt.Errorf("stdio URI scheme %q (%s) is not supported; use a FIFO path or file://: %w", u.Scheme, uri, errdefs.ErrNotImplemented)
	}
}

// drainWait bounds how long closing an output FIFO waits for the client
// to read what is still in it.
const drainWait = time.Second

// drainingFIFO is an output FIFO that, when closed, first waits until the
// client has read everything written to it. A guest can exit within
// microseconds of its start; containerd's client cancels a FIFO it is
// still opening when it learns of the exit (cio's Cancel, in
// Task.Delete), which would drop output already in the pipe. Once the
// pipe is empty the client's reader is open and has the data.
type drainingFIFO struct{ io.ReadWriteCloser }

func (f drainingFIFO) Close() error {
	if sc, ok := f.ReadWriteCloser.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			deadline := time.Now().Add(drainWait)
			for time.Now().Before(deadline) {
				unread := 0
				if err := raw.Control(func(fd uintptr) {
					unread, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
				}); err != nil || unread <= 0 {
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	return f.ReadWriteCloser.Close()
}

// stdinPump copies the client's stdin FIFO into a pipe the guest reads.
// The pipe lets CloseIO end the guest's stdin even when the client keeps
// its end of the FIFO open, without losing what the client already wrote:
// after closeWrite, the pump reads what the FIFO still holds, then the
// guest sees EOF.
type stdinPump struct {
	f    io.ReadWriteCloser // the FIFO, opened by the fifo package
	raw  syscall.RawConn    // waits for the FIFO to be open
	r    *io.PipeReader
	w    *io.PipeWriter
	done chan struct{}

	mu      sync.Mutex
	closing bool     // CloseIO (or Close) was called
	file    *os.File // the pump's own pollable descriptor of the FIFO
}

func openStdin(ctx context.Context, uri string) (*stdinPump, error) {
	u, err := url.Parse(uri)
	if err != nil || (u.Scheme != "" && u.Scheme != "fifo") {
		return nil, fmt.Errorf("stdin %q: only FIFO paths are supported: %w", uri, errdefs.ErrNotImplemented)
	}
	p := uri
	if u.Scheme != "" {
		p = u.Path
	}
	// Non-blocking: the open completes in the background when the client
	// opens its end (it normally already has).
	f, err := fifo.OpenFifo(context.WithoutCancel(ctx), p, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open fifo %s: %w", p, err)
	}
	raw, err := f.(syscall.Conn).SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("fifo %s: %w", p, err)
	}
	pr, pw := io.Pipe()
	s := &stdinPump{f: f, raw: raw, r: pr, w: pw, done: make(chan struct{})}
	go s.pump()
	return s, nil
}

// Read implements io.Reader for the guest.
func (s *stdinPump) Read(p []byte) (int, error) { return s.r.Read(p) }

// Close stops the pump and closes the FIFO.
func (s *stdinPump) Close() error {
	_ = s.r.Close()
	s.closeWrite()
	err := s.f.Close() // also abandons an open still waiting for the client
	<-s.done
	return err
}

// closeWrite asks for EOF once the FIFO is drained: the deadline wakes
// the pump if it waits for data.
func (s *stdinPump) closeWrite() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	if s.file != nil {
		_ = s.file.SetReadDeadline(time.Now())
	}
}

func (s *stdinPump) pump() {
	defer close(s.done)
	defer s.w.Close() // EOF for the guest
	// A descriptor of our own, pollable, so that closeWrite can wake a
	// read with a deadline instead of closing the FIFO under it.
	dup := -1
	var derr error
	if err := s.raw.Control(func(fd uintptr) { dup, derr = unix.Dup(int(fd)) }); err != nil || derr != nil {
		return // closed before the client opened its end
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		_ = unix.Close(dup)
		return
	}
	file := os.NewFile(uintptr(dup), "stdin")
	defer file.Close()
	s.mu.Lock()
	s.file = file
	if s.closing {
		_ = file.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	buf := make([]byte, 32<<10)
	for {
		n, err := file.Read(buf)
		if n > 0 {
			if _, werr := s.w.Write(buf[:n]); werr != nil {
				return // the process ended
			}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.drain(file, buf)
			return
		}
		if err != nil {
			return // EOF: the client closed its end
		}
	}
}

// drain copies what the FIFO holds now, without waiting for more.
func (s *stdinPump) drain(file *os.File, buf []byte) {
	_ = file.SetReadDeadline(time.Time{})
	rc, err := file.SyscallConn()
	if err != nil {
		return
	}
	for {
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return true // one attempt: never wait
		}); err != nil || rerr != nil || n <= 0 {
			return
		}
		if _, err := s.w.Write(buf[:n]); err != nil {
			return
		}
	}
}
