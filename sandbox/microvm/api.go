package microvm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/kindling-dev/kindling/agent"
	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
)

// The VM and snapshot API's types are package api's, the wire form of
// /v1/vms and /v1/snapshots.
type (
	// Prefetch is how a restore fetches a snapshot's pages ahead of the
	// guest.
	Prefetch = api.Prefetch
	// VMConfig describes a VM to create: booted from a function (the path
	// of a static linux/amd64 executable), or restored from a snapshot.
	VMConfig = api.VMConfig
	// VMInfo describes a running VM.
	VMInfo = api.VMInfo
	// SnapshotInfo describes a snapshot.
	SnapshotInfo = api.SnapshotInfo
	// InvokeRequest is one invocation through the API.
	InvokeRequest = api.VMInvokeRequest
	// InvokeResult is an invocation's outcome. A function that failed
	// also returns an *errdefs.FunctionError from the call.
	InvokeResult = api.VMInvokeResult
	// RestoreOptions say how InvokeSnapshot restores its VM.
	RestoreOptions = api.RestoreOptions
)

// Prefetch modes.
const (
	PrefetchNone       = api.PrefetchNone       // the guest faults its pages in
	PrefetchLoadingSet = api.PrefetchLoadingSet // FaaSnap: fadvise the loading set, racing the guest
	PrefetchWorkingSet = api.PrefetchWorkingSet // REAP: read the working set in, then resume the guest
)

// CreateVM boots or restores a VM and waits until its agent is ready.
func (m *Manager) CreateVM(ctx context.Context, cfg VMConfig) (VMInfo, error) {
	if cfg.ID == "" {
		cfg.ID = newID("vm")
	}
	if (cfg.Function == "") == (cfg.Snapshot == "") {
		return VMInfo{}, fmt.Errorf("microvm: create vm: set exactly one of function and snapshot: %w", errdefs.ErrInvalidArgument)
	}
	var v *vm
	var err error
	if cfg.Snapshot != "" {
		var s *snapshot
		if s, err = m.snapshot(cfg.Snapshot); err != nil {
			return VMInfo{}, err
		}
		v, err = m.restoreVM(ctx, cfg.ID, s, restoreOptions{prefetch: cfg.Prefetch}, nil)
	} else {
		v, err = m.bootFunction(ctx, cfg.ID, cfg.Function, cfg.MemoryMB)
	}
	if err != nil {
		return VMInfo{}, err
	}
	return v.info(m.guest.accel.Accel), nil
}

// bootFunction boots a VM for the executable at path, its initramfs
// written into the VM's directory.
func (m *Manager) bootFunction(ctx context.Context, id, path string, memoryMB int) (*vm, error) {
	fn, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("microvm: function: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := checkExecutable(fn); err != nil {
		return nil, fmt.Errorf("microvm: function %s: %w", path, err)
	}
	img, err := initramfs(m.guest.agent, fn, m.guest.modules)
	if err != nil {
		return nil, fmt.Errorf("microvm: initramfs: %w", err)
	}
	f, err := m.tmpFile("initrd-*")
	if err != nil {
		return nil, fmt.Errorf("microvm: %w", err)
	}
	defer os.Remove(f.Name()) // QEMU reads it at start-up
	if _, err := f.Write(img); err != nil {
		f.Close()
		return nil, fmt.Errorf("microvm: %w", err)
	}
	f.Close()
	if memoryMB == 0 {
		memoryMB = m.cfg.MemoryMB
	}
	return m.bootVM(ctx, id, f.Name(), filepath.Base(path), memoryMB, nil)
}

func (v *vm) info(accel Accel) VMInfo {
	v.mu.Lock()
	defer v.mu.Unlock()
	info := VMInfo{
		ID: v.id, State: "running", PID: v.mach.pid(), Function: v.function, Snapshot: v.snapshot,
		MemoryMB: v.memoryMB, Accel: accel, Snapshottable: v.booted, Created: v.created,
		Invocations: v.invocations, Start: v.phases,
	}
	if v.dead != nil {
		info.State, info.Error = "stopped", v.dead.Error()
	}
	return info
}

func (m *Manager) vm(id string) (*vm, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.vms[id]
	if v == nil {
		return nil, fmt.Errorf("microvm: vm %s: %w", id, errdefs.ErrNotFound)
	}
	return v, nil
}

// VM describes one VM.
func (m *Manager) VM(id string) (VMInfo, error) {
	v, err := m.vm(id)
	if err != nil {
		return VMInfo{}, err
	}
	return v.info(m.guest.accel.Accel), nil
}

// VMs lists the VMs, by ID.
func (m *Manager) VMs() []VMInfo {
	m.mu.Lock()
	var vms []*vm
	for _, v := range m.vms {
		if v != nil {
			vms = append(vms, v)
		}
	}
	m.mu.Unlock()
	out := make([]VMInfo, 0, len(vms))
	for _, v := range vms {
		out = append(out, v.info(m.guest.accel.Accel))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// DeleteVM destroys a VM: its QEMU is killed and its files removed.
func (m *Manager) DeleteVM(ctx context.Context, id string) error {
	m.mu.Lock()
	v := m.vms[id]
	if v != nil {
		delete(m.vms, id)
	}
	m.mu.Unlock()
	if v == nil {
		return fmt.Errorf("microvm: vm %s: %w", id, errdefs.ErrNotFound)
	}
	return v.destroy()
}

// Invoke runs one invocation in a running VM.
func (m *Manager) Invoke(ctx context.Context, id string, req InvokeRequest) (InvokeResult, error) {
	v, err := m.vm(id)
	if err != nil {
		return InvokeResult{}, err
	}
	rec := phase.NewRecorder()
	res, err := m.invoke(ctx, v, req, rec)
	res.Phases = rec.Timings()
	return res, err
}

func (m *Manager) invoke(ctx context.Context, v *vm, req InvokeRequest, rec *phase.Recorder) (InvokeResult, error) {
	timeout := 30 * time.Second
	if req.TimeoutMs > 0 {
		timeout = time.Duration(req.TimeoutMs) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	resp, err := v.invoke(ctx, &agent.Request{Env: req.Env, Args: req.Args, Stdin: req.Stdin}, &stdout, &stderr, rec)
	res := InvokeResult{VM: v.id, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if resp != nil {
		res.ExitCode = resp.ExitCode
	}
	return res, err
}

// InvokeSnapshot restores a VM from a snapshot, as opts say, runs one
// invocation in it and (unless opts.Keep) deletes it. The result's phases
// cover the restore and the invocation: restore-to-first-response.
func (m *Manager) InvokeSnapshot(ctx context.Context, snapshotID string, req InvokeRequest, opts RestoreOptions) (InvokeResult, error) {
	s, err := m.snapshot(snapshotID)
	if err != nil {
		return InvokeResult{}, err
	}
	if opts.DropCache {
		if err := s.dropCache(); err != nil {
			return InvokeResult{}, err
		}
	}
	rec := phase.NewRecorder()
	v, err := m.restoreVM(ctx, newID("vm"), s, restoreOptions{
		prefetch: opts.Prefetch, recordLoading: opts.RecordLoadingSet, recordWorking: opts.RecordWorkingSet,
	}, rec)
	if err != nil {
		return InvokeResult{}, err
	}
	res, err := m.invoke(ctx, v, req, rec)
	res.Phases = rec.Timings()
	if !opts.Keep {
		if derr := m.DeleteVM(ctx, v.id); derr != nil && err == nil {
			err = derr
		}
		res.VM = ""
	}
	return res, err
}

// CreateSnapshot saves a booted VM as snapshot id (generated when empty)
// and ends the VM: its memory file becomes the snapshot's.
func (m *Manager) CreateSnapshot(ctx context.Context, vmID, id string) (SnapshotInfo, error) {
	return m.createSnapshot(ctx, vmID, snapshotMeta{ID: id}, nil)
}

func (m *Manager) createSnapshot(ctx context.Context, vmID string, meta snapshotMeta, rec *phase.Recorder) (SnapshotInfo, error) {
	if meta.ID == "" {
		meta.ID = newID("snap")
	}
	if err := checkID("snapshot", meta.ID); err != nil {
		return SnapshotInfo{}, err
	}
	if err := m.reserveSnapshot(meta.ID); err != nil {
		return SnapshotInfo{}, err
	}
	v, err := m.vm(vmID)
	if err != nil {
		m.releaseSnapshot(meta.ID, nil)
		return SnapshotInfo{}, err
	}
	s, err := m.snapshotVM(ctx, v, meta, rec)
	// The VM is gone either way.
	m.mu.Lock()
	if m.vms[vmID] == v {
		delete(m.vms, vmID)
	}
	m.mu.Unlock()
	v.destroy()
	m.releaseSnapshot(meta.ID, s)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return s.info(), nil
}

// reserveSnapshot claims a snapshot id for a snapshot being made.
func (m *Manager) reserveSnapshot(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("microvm: manager is closed: %w", errdefs.ErrFailedPrecondition)
	}
	if _, ok := m.snaps[id]; ok {
		return fmt.Errorf("microvm: snapshot %s: %w", id, errdefs.ErrAlreadyExists)
	}
	m.snaps[id] = nil
	return nil
}

// releaseSnapshot publishes snapshot s under id, or drops the reservation
// when s is nil.
func (m *Manager) releaseSnapshot(id string, s *snapshot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s == nil {
		delete(m.snaps, id)
		return
	}
	m.snaps[id] = s
}

func (m *Manager) snapshot(id string) (*snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.snaps[id]
	if s == nil {
		return nil, fmt.Errorf("microvm: snapshot %s: %w", id, errdefs.ErrNotFound)
	}
	return s, nil
}

func (s *snapshot) info() SnapshotInfo {
	info := SnapshotInfo{
		ID: s.meta.ID, Function: s.meta.Function, MemoryMB: s.meta.MemoryMB, Accel: s.meta.Accel,
		Created: s.meta.Created, Template: s.meta.Template, FromVM: s.meta.FromVM,
		CachedBytes: s.cachedBytes(),
	}
	if st, err := os.Stat(filepath.Join(s.dir, fileState)); err == nil {
		info.StateBytes = st.Size()
	}
	if set, err := s.pageSet(setLoading); err == nil {
		info.LoadingSetPages = set.Pages()
	}
	if set, err := s.pageSet(setWorking); err == nil {
		info.WorkingSetPages = set.Pages()
	}
	return info
}

// Snapshot describes one snapshot.
func (m *Manager) Snapshot(id string) (SnapshotInfo, error) {
	s, err := m.snapshot(id)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return s.info(), nil
}

// Snapshots lists the snapshots, by ID.
func (m *Manager) Snapshots() []SnapshotInfo {
	m.mu.Lock()
	var snaps []*snapshot
	for _, s := range m.snaps {
		if s != nil {
			snaps = append(snaps, s)
		}
	}
	m.mu.Unlock()
	out := make([]SnapshotInfo, 0, len(snaps))
	for _, s := range snaps {
		out = append(out, s.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// CopySnapshot copies snapshot src, with its page sets, to a new snapshot
// dst (generated when empty).
func (m *Manager) CopySnapshot(ctx context.Context, src, dst string) (SnapshotInfo, error) {
	s, err := m.snapshot(src)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if dst == "" {
		dst = newID("snap")
	}
	if err := checkID("snapshot", dst); err != nil {
		return SnapshotInfo{}, err
	}
	if err := m.reserveSnapshot(dst); err != nil {
		return SnapshotInfo{}, err
	}
	c, err := m.copySnapshot(s, dst)
	m.releaseSnapshot(dst, c)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return c.info(), nil
}

// DeleteSnapshot removes a snapshot. VMs restored from it keep running:
// their QEMUs hold the memory file open.
func (m *Manager) DeleteSnapshot(ctx context.Context, id string) error {
	m.mu.Lock()
	s := m.snaps[id]
	if s != nil {
		delete(m.snaps, id)
	}
	m.mu.Unlock()
	if s == nil {
		return fmt.Errorf("microvm: snapshot %s: %w", id, errdefs.ErrNotFound)
	}
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("microvm: delete snapshot %s: %w", id, err)
	}
	return nil
}

// DropSnapshotCache evicts the snapshot's memory and state files from the
// host's page cache (posix_fadvise DONTNEED), so the next restore reads
// them from disk. Pages mapped by running VMs stay.
func (m *Manager) DropSnapshotCache(id string) error {
	s, err := m.snapshot(id)
	if err != nil {
		return err
	}
	return s.dropCache()
}

// LoadingSet returns the snapshot's loading set (empty when none).
func (m *Manager) LoadingSet(id string) (PageSet, error) { return m.getSet(id, setLoading) }

// WorkingSet returns the snapshot's working set (empty when none).
func (m *Manager) WorkingSet(id string) (PageSet, error) { return m.getSet(id, setWorking) }

// PutLoadingSet replaces the snapshot's loading set; an empty set removes
// it.
func (m *Manager) PutLoadingSet(id string, set PageSet) error { return m.putSet(id, setLoading, set) }

// PutWorkingSet replaces the snapshot's working set; an empty set removes
// it.
func (m *Manager) PutWorkingSet(id string, set PageSet) error { return m.putSet(id, setWorking, set) }

func (m *Manager) getSet(id string, kind setKind) (PageSet, error) {
	s, err := m.snapshot(id)
	if err != nil {
		return PageSet{}, err
	}
	return s.pageSet(kind)
}

func (m *Manager) putSet(id string, kind setKind, set PageSet) error {
	s, err := m.snapshot(id)
	if err != nil {
		return err
	}
	if set.PageSize == 0 && len(set.Extents) == 0 {
		set.PageSize = os.Getpagesize()
	}
	if set.PageSize != os.Getpagesize() {
		return fmt.Errorf("microvm: page set of %d-byte pages, the host's are %d bytes: %w", set.PageSize, os.Getpagesize(), errdefs.ErrInvalidArgument)
	}
	return s.putPageSet(kind, set)
}
