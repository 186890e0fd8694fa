package wasm

import (
	"io"
	"time"
)

// stdio is an instance's standard I/O, re-pointed at each request's
// streams (a pooled instance serves many requests, one at a time). It also
// records when the guest first used its request or response: the end of
// its start-up (language runtime initialization) and the start of the
// function's own code.
type stdio struct {
	in       io.Reader
	out, err io.Writer
	start    time.Time
	touched  time.Time
}

// bind points the streams at one request's and restarts the clock.
func (s *stdio) bind(in io.Reader, out, errw io.Writer, start time.Time) {
	s.in, s.out, s.err = in, out, errw
	s.start, s.touched = start, time.Time{}
}

// unbind drops the request's streams so a pooled instance keeps no
// reference to them.
func (s *stdio) unbind() { s.in, s.out, s.err = nil, nil, nil }

// firstTouch returns when the guest first used stdin or stdout, or end.
func (s *stdio) firstTouch(end time.Time) time.Time {
	if s.touched.IsZero() {
		return end
	}
	return s.touched
}

func (s *stdio) touch() {
	if s.touched.IsZero() && !s.start.IsZero() {
		s.touched = time.Now()
	}
}

type stdinReader struct{ s *stdio }

func (r stdinReader) Read(p []byte) (int, error) {
	r.s.touch()
	if r.s.in == nil {
		return 0, io.EOF
	}
	return r.s.in.Read(p)
}

type stdoutWriter struct{ s *stdio }

func (w stdoutWriter) Write(p []byte) (int, error) {
	w.s.touch()
	if w.s.out == nil {
		return len(p), nil
	}
	return w.s.out.Write(p)
}

type stderrWriter struct{ s *stdio }

func (w stderrWriter) Write(p []byte) (int, error) {
	if w.s.err == nil {
		return len(p), nil
	}
	return w.s.err.Write(p)
}
