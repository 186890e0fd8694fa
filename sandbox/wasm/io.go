package wasm

import (
	"io"
	"time"
)

// firstTouch records when the guest first used its request or response:
// the end of its start-up (language runtime initialization) and the start
// of the function's own code.
type firstTouch struct {
	start time.Time
	at    time.Time
}

func (f *firstTouch) touch() {
	if f.at.IsZero() && !f.start.IsZero() {
		f.at = time.Now()
	}
}

type markReader struct {
	r    io.Reader
	mark *firstTouch
}

func (m *markReader) Read(p []byte) (int, error) {
	m.mark.touch()
	if m.r == nil {
		return 0, io.EOF
	}
	return m.r.Read(p)
}

type markWriter struct {
	w    io.Writer
	mark *firstTouch
}

func (m *markWriter) Write(p []byte) (int, error) {
	m.mark.touch()
	if m.w == nil {
		return len(p), nil
	}
	return m.w.Write(p)
}

func nonNil(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
