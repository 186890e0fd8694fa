package microvm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
)

// ErrCorruptSnapshot is wrapped by errors about snapshot files that are
// missing, truncated or not what they claim to be.
var ErrCorruptSnapshot = errors.New("corrupt snapshot")

// Files of a snapshot directory.
const (
	fileMeta    = "meta.json"
	fileMem     = "mem"   // guest RAM, as the VM left it
	fileState   = "state" // QEMU's device state (a migration stream without RAM)
	fileLoading = "loading.set"
	fileWorking = "working.set"
)

// setKind names one of a snapshot's page sets.
type setKind string

const (
	setLoading setKind = fileLoading
	setWorking setKind = fileWorking
)

// snapshotMeta is a snapshot's meta.json.
type snapshotMeta struct {
	ID       string    `json:"id"`
	Function string    `json:"function,omitempty"`
	MemoryMB int       `json:"memoryMB"`
	Accel    Accel     `json:"accel"`
	Created  time.Time `json:"created"`
	// Template marks a function template the driver made: removed with
	// the driver, and by Reconcile.
	Template bool `json:"template,omitempty"`
	// FromVM is the VM it was taken from.
	FromVM string `json:"fromVM,omitempty"`
}

// snapshot is a saved VM: its RAM file, its device state, and the page
// sets recorded by invocations restored from it.
type snapshot struct {
	dir  string
	meta snapshotMeta

	mu sync.Mutex // serializes page set files
}

func (s *snapshot) memPath() string { return filepath.Join(s.dir, fileMem) }

func (s *snapshot) memSize() int64 { return int64(s.meta.MemoryMB) << 20 }

// open opens the state and memory files for a restore, checking that they
// look like what they should be.
func (s *snapshot) open() (state, mem *os.File, err error) {
	state, err = os.Open(filepath.Join(s.dir, fileState))
	if err != nil {
		return nil, nil, fmt.Errorf("microvm: snapshot %s: %w: %w", s.meta.ID, ErrCorruptSnapshot, err)
	}
	// A QEMU migration stream starts with "QEVM" and version 3.
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(state, hdr); err != nil || !bytes.Equal(hdr, []byte("QEVM\x00\x00\x00\x03")) {
		state.Close()
		return nil, nil, fmt.Errorf("microvm: snapshot %s: the state file is not a QEMU device state: %w", s.meta.ID, ErrCorruptSnapshot)
	}
	if _, err := state.Seek(0, io.SeekStart); err != nil {
		state.Close()
		return nil, nil, fmt.Errorf("microvm: snapshot %s: %w", s.meta.ID, err)
	}
	mem, err = os.Open(s.memPath())
	if err != nil {
		state.Close()
		return nil, nil, fmt.Errorf("microvm: snapshot %s: %w: %w", s.meta.ID, ErrCorruptSnapshot, err)
	}
	if st, err := mem.Stat(); err != nil || st.Size() != s.memSize() {
		state.Close()
		mem.Close()
		return nil, nil, fmt.Errorf("microvm: snapshot %s: the memory file is not %d MiB: %w", s.meta.ID, s.meta.MemoryMB, ErrCorruptSnapshot)
	}
	return state, mem, nil
}

// pageSet returns one of the snapshot's page sets, read from its file (a
// few kilobytes); an empty set when none was recorded.
func (s *snapshot) pageSet(kind setKind) (PageSet, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := os.ReadFile(filepath.Join(s.dir, string(kind)))
	if errors.Is(err, fs.ErrNotExist) {
		return PageSet{PageSize: os.Getpagesize()}, nil
	}
	if err != nil {
		return PageSet{}, fmt.Errorf("microvm: snapshot %s: %w", s.meta.ID, err)
	}
	var set PageSet
	if err := set.UnmarshalBinary(b); err != nil {
		return PageSet{}, fmt.Errorf("microvm: snapshot %s: %s: %w: %w", s.meta.ID, kind, ErrCorruptSnapshot, err)
	}
	if err := set.Validate(s.memSize()); err != nil {
		return PageSet{}, fmt.Errorf("microvm: snapshot %s: %s: %w: %w", s.meta.ID, kind, ErrCorruptSnapshot, err)
	}
	return set, nil
}

// putPageSet stores (or, when empty, removes) one of the snapshot's page
// sets.
func (s *snapshot) putPageSet(kind setKind, set PageSet) error {
	path := filepath.Join(s.dir, string(kind))
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(set.Extents) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("microvm: snapshot %s: %w", s.meta.ID, err)
		}
		return nil
	}
	if err := set.Validate(s.memSize()); err != nil {
		return fmt.Errorf("microvm: snapshot %s: %w: %w", s.meta.ID, err, errdefs.ErrInvalidArgument)
	}
	b, _ := set.MarshalBinary()
	if err := writeFileAtomic(path, b); err != nil {
		return fmt.Errorf("microvm: snapshot %s: %w", s.meta.ID, err)
	}
	return nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readMeta(dir string) (snapshotMeta, error) {
	var meta snapshotMeta
	b, err := os.ReadFile(filepath.Join(dir, fileMeta))
	if err != nil {
		return meta, err
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return meta, fmt.Errorf("%s: %w", fileMeta, err)
	}
	return meta, nil
}

// loadSnapshots reads the snapshots kept under the root.
func (m *Manager) loadSnapshots() error {
	entries, err := os.ReadDir(filepath.Join(m.cfg.Root, dirSnapshots))
	if err != nil {
		return fmt.Errorf("microvm: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(m.cfg.Root, dirSnapshots, e.Name())
		meta, err := readMeta(dir)
		if err != nil || meta.ID != e.Name() {
			m.log.Warn("microvm: skipping an unreadable snapshot", "dir", dir, "err", err)
			continue
		}
		m.snaps[meta.ID] = &snapshot{dir: dir, meta: meta}
	}
	return nil
}

// snapshotVM saves VM v as snapshot id and ends the VM: its memory file
// becomes the snapshot's. The agent's port is closed first and the
// snapshot taken once the agent waits for the next connection, so every
// clone gets a readiness byte when it connects.
func (m *Manager) snapshotVM(ctx context.Context, v *vm, meta snapshotMeta, rec *phase.Recorder) (_ *snapshot, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.dead != nil {
		return nil, fmt.Errorf("microvm: snapshot vm %s: %w", v.id, v.dead)
	}
	if !v.booted {
		return nil, fmt.Errorf("microvm: snapshot vm %s: a VM restored from a snapshot maps its memory privately and cannot be snapshotted; snapshot a booted VM: %w", v.id, errdefs.ErrFailedPrecondition)
	}
	start := time.Now()
	dst := filepath.Join(m.cfg.Root, dirSnapshots, meta.ID)
	tmp := filepath.Join(m.cfg.Root, dirSnapshots, "."+meta.ID)
	os.RemoveAll(tmp)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("microvm: snapshot %s: %w", meta.ID, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	// The VM is consumed from here on, whatever happens.
	v.dead = fmt.Errorf("microvm: vm %s became snapshot %s: %w", v.id, meta.ID, errdefs.ErrNotFound)
	mach := v.mach
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	mach.agent.Close()
	if _, err := mach.console.waitFor(ctx, v.waitOff, lineWaiting, mach.exited); err != nil {
		return nil, fmt.Errorf("microvm: snapshot vm %s: waiting for the agent to let go of the host: %w", v.id, mach.exitError(err))
	}
	if err := mach.qmp.Stop(ctx); err != nil {
		return nil, fmt.Errorf("microvm: snapshot vm %s: %w", v.id, mach.exitError(err))
	}
	state, err := os.Create(filepath.Join(tmp, fileState))
	if err != nil {
		return nil, fmt.Errorf("microvm: snapshot %s: %w", meta.ID, err)
	}
	defer state.Close()
	events, unsubscribe := mach.qmp.Subscribe("MIGRATION")
	defer unsubscribe()
	err = mach.qmp.SetCapabilities(ctx, map[string]bool{"x-ignore-shared": true, "events": true})
	if err == nil {
		err = mach.qmp.SendFD(ctx, "state", state)
	}
	if err == nil {
		err = mach.qmp.Migrate(ctx, "fd:state")
	}
	if err == nil {
		err = mach.qmp.WaitMigration(ctx, events)
	}
	if err != nil {
		return nil, fmt.Errorf("microvm: snapshot vm %s: save device state: %w", v.id, mach.exitError(err))
	}
	mach.quit(ctx)
	// The RAM is in the memory file's page cache; make it durable, so the
	// snapshot outlives a reboot and its page cache can be dropped.
	if err := syncFile(state); err != nil {
		return nil, fmt.Errorf("microvm: snapshot %s: %w", meta.ID, err)
	}
	if err := syncPath(v.memPath); err != nil {
		return nil, fmt.Errorf("microvm: snapshot %s: %w", meta.ID, err)
	}
	if err := os.Rename(v.memPath, filepath.Join(tmp, fileMem)); err != nil {
		return nil, fmt.Errorf("microvm: snapshot %s: %w", meta.ID, err)
	}
	meta.MemoryMB, meta.Accel, meta.Created, meta.FromVM = v.memoryMB, m.guest.accel.Accel, time.Now().UTC(), v.id
	if meta.Function == "" {
		meta.Function = v.function
	}
	if err := writeMeta(tmp, meta); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return nil, fmt.Errorf("microvm: snapshot %s: %w", meta.ID, err)
	}
	rec.Since(phase.Snapshot, start, "")
	return &snapshot{dir: dst, meta: meta}, nil
}

func writeMeta(dir string, meta snapshotMeta) error {
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fmt.Errorf("microvm: snapshot %s: %w", meta.ID, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, fileMeta), b); err != nil {
		return fmt.Errorf("microvm: snapshot %s: %w", meta.ID, err)
	}
	return nil
}

func syncFile(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return syncFile(f)
}

// copySnapshot copies snapshot s to a new snapshot id (an API snapshot,
// even when s is a template).
func (m *Manager) copySnapshot(s *snapshot, id string) (_ *snapshot, err error) {
	dst := filepath.Join(m.cfg.Root, dirSnapshots, id)
	tmp := filepath.Join(m.cfg.Root, dirSnapshots, "."+id)
	os.RemoveAll(tmp)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("microvm: copy snapshot %s: %w", s.meta.ID, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	for _, name := range []string{fileMem, fileState, fileLoading, fileWorking} {
		if err := copyFile(filepath.Join(s.dir, name), filepath.Join(tmp, name)); err != nil {
			if errors.Is(err, fs.ErrNotExist) && (name == fileLoading || name == fileWorking) {
				continue
			}
			return nil, fmt.Errorf("microvm: copy snapshot %s: %w", s.meta.ID, err)
		}
	}
	meta := s.meta
	meta.ID, meta.Template, meta.Created = id, false, time.Now().UTC()
	if err := writeMeta(tmp, meta); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return nil, fmt.Errorf("microvm: copy snapshot %s: %w", s.meta.ID, err)
	}
	return &snapshot{dir: dst, meta: meta}, nil
}

// copyFile copies src to dst (with copy_file_range where the kernel can)
// and syncs it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := syncFile(out); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// cachedBytes is how much of the snapshot's memory file is in the page
// cache.
func (s *snapshot) cachedBytes() int64 {
	f, err := os.Open(s.memPath())
	if err != nil {
		return 0
	}
	defer f.Close()
	r, err := newResidency(f, s.memSize())
	if err != nil {
		return 0
	}
	defer r.close()
	vec, err := r.scan()
	if err != nil {
		return 0
	}
	var n int64
	for _, v := range vec {
		n += int64(v & 1)
	}
	return n * int64(os.Getpagesize())
}

// dropCache evicts the snapshot's files from the page cache.
func (s *snapshot) dropCache() error {
	var errs []error
	for _, name := range []string{fileMem, fileState} {
		if err := dropCache(filepath.Join(s.dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("microvm: snapshot %s: %w", s.meta.ID, err)
	}
	return nil
}
