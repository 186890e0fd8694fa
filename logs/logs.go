// Package logs keeps function logs (their instances' stderr) on disk: one
// directory per function, and in it one directory per instance, each
// size-capped with one rotated generation:
//
//	<root>/<function>/<instance>/current.log
//	<root>/<function>/<instance>/previous.log
//
// Each line is stored as "<RFC 3339 time> <invocation id> <text>". Reading
// a function's logs merges its instances' lines in time order. A function
// keeps the MaxInstances most recently written instance directories.
package logs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Defaults for New.
const (
	DefaultMaxBytes = 8 << 20 // size at which an instance's log is rotated
	MaxInstances    = 64      // instance directories kept per function
)

const (
	currentName  = "current.log"
	previousName = "previous.log"
)

// Dir is the root of all function logs. It is safe for concurrent use.
type Dir struct {
	root     string
	maxBytes int64
	funcs    sync.Map // function name -> *funcLogs
}

// funcLogs is one function's open instance logs.
type funcLogs struct {
	mu        sync.Mutex
	instances map[string]*file
	changed   chan struct{} // closed and replaced on every append
}

type file struct {
	f    *os.File
	size int64
}

// New returns the log directory rooted at root.
func New(root string, maxBytes int64) *Dir {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return &Dir{root: root, maxBytes: maxBytes}
}

func (d *Dir) function(fn string) *funcLogs {
	v, _ := d.funcs.LoadOrStore(fn, &funcLogs{instances: map[string]*file{}, changed: make(chan struct{})})
	return v.(*funcLogs)
}

// Append writes text (one or more lines) to the log of one instance of
// function fn.
func (d *Dir) Append(fn, instance, invocationID string, at time.Time, text []byte) error {
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
	fl := d.function(fn)
	fl.mu.Lock()
	defer fl.mu.Unlock()
	defer func() {
		close(fl.changed)
		fl.changed = make(chan struct{})
	}()
	lf, err := d.open(fn, instance, fl)
	if err != nil {
		return err
	}
	if lf.size+int64(buf.Len()) > d.maxBytes && lf.size > 0 {
		if lf, err = d.rotate(fn, instance, fl); err != nil {
			return err
		}
	}
	n, err := lf.f.Write(buf.Bytes())
	lf.size += int64(n)
	if err != nil {
		return fmt.Errorf("logs: write %s/%s: %w", fn, instance, err)
	}
	return nil
}

func (d *Dir) open(fn, instance string, fl *funcLogs) (*file, error) {
	if lf, ok := fl.instances[instance]; ok {
		return lf, nil
	}
	dir := filepath.Join(d.root, fn, instance)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("logs: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, currentName), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("logs: open %s/%s: %w", fn, instance, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("logs: stat %s/%s: %w", fn, instance, err)
	}
	lf := &file{f: f, size: st.Size()}
	fl.instances[instance] = lf
	d.prune(fn, fl)
	return lf, nil
}

// prune removes the least recently written instance directories beyond
// MaxInstances.
func (d *Dir) prune(fn string, fl *funcLogs) {
	dirs, err := d.instanceDirs(fn)
	if err != nil || len(dirs) <= MaxInstances {
		return
	}
	for _, old := range dirs[:len(dirs)-MaxInstances] {
		name := filepath.Base(old)
		if lf, ok := fl.instances[name]; ok {
			lf.f.Close()
			delete(fl.instances, name)
		}
		os.RemoveAll(old)
	}
}

// instanceDirs lists a function's instance directories, least recently
// written first.
func (d *Dir) instanceDirs(fn string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(d.root, fn))
	if err != nil {
		return nil, err
	}
	type dirTime struct {
		path string
		mod  time.Time
	}
	var dts []dirTime
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(d.root, fn, e.Name())
		mod := time.Time{}
		if st, err := os.Stat(filepath.Join(p, currentName)); err == nil {
			mod = st.ModTime()
		}
		dts = append(dts, dirTime{p, mod})
	}
	sort.Slice(dts, func(i, j int) bool { return dts[i].mod.Before(dts[j].mod) })
	out := make([]string, len(dts))
	for i, dt := range dts {
		out[i] = dt.path
	}
	return out, nil
}

func (d *Dir) rotate(fn, instance string, fl *funcLogs) (*file, error) {
	fl.instances[instance].f.Close()
	delete(fl.instances, instance)
	dir := filepath.Join(d.root, fn, instance)
	if err := os.Rename(filepath.Join(dir, currentName), filepath.Join(dir, previousName)); err != nil {
		return nil, fmt.Errorf("logs: rotate %s/%s: %w", fn, instance, err)
	}
	return d.open(fn, instance, fl)
}

// lines returns a function's log lines at or after since, merged across
// instances in time order.
func (d *Dir) lines(fn string, since time.Time) ([]string, error) {
	dirs, err := d.instanceDirs(fn)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("logs: %w", err)
	}
	var lines []string
	for _, dir := range dirs {
		for _, name := range []string{previousName, currentName} {
			f, err := os.Open(filepath.Join(dir, name))
			if os.IsNotExist(err) {
				continue
			} else if err != nil {
				return nil, fmt.Errorf("logs: %w", err)
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
				return nil, fmt.Errorf("logs: read %s: %w", fn, err)
			}
		}
	}
	// RFC 3339 stamps in UTC with nanoseconds sort as text... except for
	// trailing zeros trimmed by RFC3339Nano; compare parsed times.
	sort.SliceStable(lines, func(i, j int) bool { return stampOf(lines[i]).Before(stampOf(lines[j])) })
	return lines, nil
}

func stampOf(line string) time.Time {
	stamp, _, _ := strings.Cut(line, " ")
	t, _ := time.Parse(time.RFC3339Nano, stamp)
	return t
}

// Read copies function fn's log lines written at or after since (zero:
// all) to w, oldest first, at most tail lines from the end if tail > 0.
func (d *Dir) Read(fn string, since time.Time, tail int, w io.Writer) error {
	lines, err := d.lines(fn, since)
	if err != nil {
		return err
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

// ReadInvocation copies the lines one invocation logged (without their
// time and ID prefix) to w.
func (d *Dir) ReadInvocation(fn, invocationID string, w io.Writer) error {
	lines, err := d.lines(fn, time.Time{})
	if err != nil {
		return err
	}
	marker := " " + invocationID + " "
	for _, l := range lines {
		if _, rest, ok := strings.Cut(l, marker); ok {
			if _, err := io.WriteString(w, rest+"\n"); err != nil {
				return err
			}
		}
	}
	return nil
}

// Follow writes function fn's log lines since since (as Read does), then
// every line appended later, until ctx is done. flush is called after each
// batch. Appends wake it; it never polls.
func (d *Dir) Follow(ctx context.Context, fn string, since time.Time, w io.Writer, flush func()) error {
	fl := d.function(fn)
	// What exists now, read with appends held off, so that no line is lost
	// or repeated between the read and the follow.
	fl.mu.Lock()
	changed := fl.changed
	seen, err := d.lines(fn, since)
	offsets := d.offsets(fn)
	fl.mu.Unlock()
	if err != nil {
		return err
	}
	for _, l := range seen {
		if _, err := io.WriteString(w, l+"\n"); err != nil {
			return err
		}
	}
	flush()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		fl.mu.Lock()
		changed = fl.changed
		now := d.offsets(fn)
		fl.mu.Unlock()
		for inst, size := range now {
			off := offsets[inst]
			if size < off {
				off = 0 // rotated: the new file starts over
			}
			if size == off {
				continue
			}
			f, err := os.Open(filepath.Join(d.root, fn, inst, currentName))
			if err != nil {
				continue // pruned meanwhile
			}
			_, err = io.Copy(w, io.NewSectionReader(f, off, size-off))
			f.Close()
			if err != nil {
				return err
			}
		}
		offsets = now
		flush()
	}
}

// offsets returns the size of each instance's current log.
func (d *Dir) offsets(fn string) map[string]int64 {
	out := map[string]int64{}
	entries, _ := os.ReadDir(filepath.Join(d.root, fn))
	for _, e := range entries {
		if st, err := os.Stat(filepath.Join(d.root, fn, e.Name(), currentName)); err == nil {
			out[e.Name()] = st.Size()
		}
	}
	return out
}

// Remove deletes function fn's logs.
func (d *Dir) Remove(fn string) error {
	if v, ok := d.funcs.LoadAndDelete(fn); ok {
		fl := v.(*funcLogs)
		fl.mu.Lock()
		for _, lf := range fl.instances {
			lf.f.Close()
		}
		fl.instances = map[string]*file{}
		fl.mu.Unlock()
	}
	if err := os.RemoveAll(filepath.Join(d.root, fn)); err != nil {
		return fmt.Errorf("logs: remove %s: %w", fn, err)
	}
	return nil
}

// Close closes all open log files.
func (d *Dir) Close() error {
	d.funcs.Range(func(_, v any) bool {
		fl := v.(*funcLogs)
		fl.mu.Lock()
		for _, lf := range fl.instances {
			lf.f.Close()
		}
		fl.instances = map[string]*file{}
		fl.mu.Unlock()
		return true
	})
	return nil
}
