// Package logs keeps each function's logs (its instances' stderr) on disk,
// one directory per function, size-capped with one rotated generation.
//
// Each line is stored as "<RFC 3339 time> <invocation id> <text>".
package logs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultMaxBytes is the size at which a function's log is rotated.
const DefaultMaxBytes = 8 << 20

const (
	currentName  = "current.log"
	previousName = "previous.log"
)

// Dir is the root of all function logs. It is safe for concurrent use.
type Dir struct {
	root     string
	maxBytes int64
	files    sync.Map // function name -> *file
}

type file struct {
	mu      sync.Mutex
	f       *os.File
	size    int64
	changed chan struct{} // closed and replaced on every append
}

func (d *Dir) file(fn string) *file {
	v, _ := d.files.LoadOrStore(fn, &file{changed: make(chan struct{})})
	return v.(*file)
}

// New returns the log directory rooted at root.
func New(root string, maxBytes int64) *Dir {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return &Dir{root: root, maxBytes: maxBytes}
}

// Append writes text (one or more lines) as lines of function fn's log.
func (d *Dir) Append(fn, invocationID string, at time.Time, text []byte) error {
	if len(text) == 0 {
		return nil
	}
	var buf bytes.Buffer
	stamp := at.UTC().Format(time.RFC3339Nano)
	for line := range bytes.Lines(text) {
		buf.WriteString(stamp)
		buf.WriteByte(' ')
		buf.WriteString(invocationID)
		buf.WriteByte(' ')
		buf.Write(bytes.TrimRight(line, "\r\n"))
		buf.WriteByte('\n')
	}
	lf := d.file(fn)
	lf.mu.Lock()
	defer lf.mu.Unlock()
	defer func() {
		close(lf.changed)
		lf.changed = make(chan struct{})
	}()
	if err := d.open(fn, lf); err != nil {
		return err
	}
	if lf.size+int64(buf.Len()) > d.maxBytes && lf.size > 0 {
		if err := d.rotate(fn, lf); err != nil {
			return err
		}
	}
	n, err := lf.f.Write(buf.Bytes())
	lf.size += int64(n)
	if err != nil {
		return fmt.Errorf("logs: write %s: %w", fn, err)
	}
	return nil
}

func (d *Dir) open(fn string, lf *file) error {
	if lf.f != nil {
		return nil
	}
	dir := filepath.Join(d.root, fn)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, currentName), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("logs: open %s: %w", fn, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("logs: stat %s: %w", fn, err)
	}
	lf.f, lf.size = f, st.Size()
	return nil
}

func (d *Dir) rotate(fn string, lf *file) error {
	lf.f.Close()
	lf.f = nil
	dir := filepath.Join(d.root, fn)
	if err := os.Rename(filepath.Join(dir, currentName), filepath.Join(dir, previousName)); err != nil {
		return fmt.Errorf("logs: rotate %s: %w", fn, err)
	}
	return d.open(fn, lf)
}

// Read copies function fn's log lines written at or after since (zero:
// all) to w, oldest first, at most tail lines from the end if tail > 0.
func (d *Dir) Read(fn string, since time.Time, tail int, w io.Writer) error {
	dir := filepath.Join(d.root, fn)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil // no logs yet
	}
	var lines []string
	for _, name := range []string{previousName, currentName} {
		f, err := os.Open(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("logs: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !since.IsZero() {
				stamp, _, _ := strings.Cut(line, " ")
				if t, err := time.Parse(time.RFC3339Nano, stamp); err == nil && t.Before(since) {
					continue
				}
			}
			lines = append(lines, line)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return fmt.Errorf("logs: read %s: %w", fn, err)
		}
	}
	if tail > 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	for _, l := range lines {
		if _, err := io.WriteString(w, l+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes function fn's logs.
func (d *Dir) Remove(fn string) error {
	if v, ok := d.files.LoadAndDelete(fn); ok {
		lf := v.(*file)
		lf.mu.Lock()
		if lf.f != nil {
			lf.f.Close()
			lf.f = nil
		}
		lf.mu.Unlock()
	}
	if err := os.RemoveAll(filepath.Join(d.root, fn)); err != nil {
		return fmt.Errorf("logs: remove %s: %w", fn, err)
	}
	return nil
}

// Close closes all open log files.
func (d *Dir) Close() error {
	d.files.Range(func(k, v any) bool {
		lf := v.(*file)
		lf.mu.Lock()
		if lf.f != nil {
			lf.f.Close()
			lf.f = nil
		}
		lf.mu.Unlock()
		return true
	})
	return nil
}

// ReadInvocation copies the lines one invocation logged (without their
// time and ID prefix) to w.
func (d *Dir) ReadInvocation(fn, invocationID string, w io.Writer) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(d.Read(fn, time.Time{}, 0, pw)) }()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	marker := " " + invocationID + " "
	for sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), marker); ok {
			if _, err := io.WriteString(w, rest+"\n"); err != nil {
				pr.CloseWithError(err)
				return err
			}
		}
	}
	return sc.Err()
}

// Follow writes function fn's log lines since since (as Read does), then
// every line appended later, until ctx is done. flush is called after each
// batch. Appends wake it; it never polls.
func (d *Dir) Follow(ctx context.Context, fn string, since time.Time, w io.Writer, flush func()) error {
	lf := d.file(fn)
	path := filepath.Join(d.root, fn, currentName)
	// What exists now, and where it ends, read with appends held off, so
	// that no line is lost or repeated between the two.
	lf.mu.Lock()
	changed := lf.changed
	err := d.Read(fn, since, 0, w)
	var off int64
	if st, serr := os.Stat(path); serr == nil {
		off = st.Size()
	}
	lf.mu.Unlock()
	if err != nil {
		return err
	}
	flush()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		lf.mu.Lock()
		changed = lf.changed
		lf.mu.Unlock()
		f, err := os.Open(path)
		if err != nil {
			continue // rotated or removed meanwhile
		}
		if st, err := f.Stat(); err == nil && st.Size() < off {
			off = 0 // rotated: the new file starts over
		}
		n, err := io.Copy(w, io.NewSectionReader(f, off, 1<<62))
		f.Close()
		off += n
		if err != nil {
			return err
		}
		flush()
	}
}
