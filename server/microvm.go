package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox/microvm"
)

// MicroVMs is the microvm sandbox's VM and snapshot API, served under
// /v1/vms and /v1/snapshots; *microvm.Manager implements it.
type MicroVMs interface {
	CreateVM(ctx context.Context, cfg microvm.VMConfig) (microvm.VMInfo, error)
	VM(id string) (microvm.VMInfo, error)
	VMs() []microvm.VMInfo
	DeleteVM(ctx context.Context, id string) error
	Invoke(ctx context.Context, vmID string, req microvm.InvokeRequest) (microvm.InvokeResult, error)

	CreateSnapshot(ctx context.Context, vmID, id string) (microvm.SnapshotInfo, error)
	Snapshot(id string) (microvm.SnapshotInfo, error)
	Snapshots() []microvm.SnapshotInfo
	CopySnapshot(ctx context.Context, src, dst string) (microvm.SnapshotInfo, error)
	DeleteSnapshot(ctx context.Context, id string) error
	DropSnapshotCache(id string) error
	InvokeSnapshot(ctx context.Context, id string, req microvm.InvokeRequest, opts microvm.RestoreOptions) (microvm.InvokeResult, error)

	LoadingSet(id string) (microvm.PageSet, error)
	WorkingSet(id string) (microvm.PageSet, error)
	PutLoadingSet(id string, set microvm.PageSet) error
	PutWorkingSet(id string, set microvm.PageSet) error
}

var _ MicroVMs = (*microvm.Manager)(nil)

// Body limits of the microvm routes: control bodies are small; a page set
// of a large, fragmented memory file is not; an invocation carries its
// stdin base64-encoded in JSON.
const (
	maxControlBytes = 1 << 20
	maxPageSetBytes = 32 << 20
)

// vmList answers GET /v1/vms.
type vmList struct {
	VMs []microvm.VMInfo `json:"vms"`
}

// snapshotList answers GET /v1/snapshots.
type snapshotList struct {
	Snapshots []microvm.SnapshotInfo `json:"snapshots"`
}

// snapshotRequest is the body of POST /v1/vms/{id}/snapshot and POST
// /v1/snapshots/{id}/copy: the new snapshot's id (generated when empty).
type snapshotRequest struct {
	ID string `json:"id,omitempty"`
}

// snapshotInvokeRequest is the body of POST /v1/snapshots/{id}/invoke: an
// invocation and how to restore the VM that serves it.
type snapshotInvokeRequest struct {
	microvm.InvokeRequest
	microvm.RestoreOptions
}

func (s *Server) microVMRoutes() {
	s.handle("POST /v1/vms", s.withVMs(s.createVM))
	s.handle("GET /v1/vms", s.withVMs(s.listVMs))
	s.handle("GET /v1/vms/{id}", s.withVMs(s.getVM))
	s.handle("DELETE /v1/vms/{id}", s.withVMs(s.deleteVM))
	s.handle("POST /v1/vms/{id}/invoke", s.withVMs(s.invokeVM))
	s.handle("POST /v1/vms/{id}/snapshot", s.withVMs(s.snapshotVM))
	s.handle("GET /v1/snapshots", s.withVMs(s.listSnapshots))
	s.handle("GET /v1/snapshots/{id}", s.withVMs(s.getSnapshot))
	s.handle("DELETE /v1/snapshots/{id}", s.withVMs(s.deleteSnapshot))
	s.handle("POST /v1/snapshots/{id}/copy", s.withVMs(s.copySnapshot))
	s.handle("POST /v1/snapshots/{id}/drop-cache", s.withVMs(s.dropSnapshotCache))
	s.handle("POST /v1/snapshots/{id}/invoke", s.withVMs(s.invokeSnapshot))
	for _, ps := range []pageSetRoute{
		{"loading-set", MicroVMs.LoadingSet, MicroVMs.PutLoadingSet},
		{"working-set", MicroVMs.WorkingSet, MicroVMs.PutWorkingSet},
	} {
		path := "/v1/snapshots/{id}/" + ps.name
		s.handle("GET "+path, s.withVMs(ps.get))
		s.handle("PUT "+path, s.withVMs(func(w http.ResponseWriter, r *http.Request, m MicroVMs) { s.putPageSet(w, r, m, ps, false) }))
		s.handle("PATCH "+path, s.withVMs(func(w http.ResponseWriter, r *http.Request, m MicroVMs) { s.putPageSet(w, r, m, ps, true) }))
	}
}

// errNoMicroVMs answers the microvm routes of a daemon without the sandbox.
var errNoMicroVMs = fmt.Errorf("microvm sandbox not enabled (start the daemon with --microvm; if it was, its log says why the sandbox is not available): %w", errdefs.ErrNotImplemented)

// withVMs adapts a handler of the microvm routes, answering 501 when the
// sandbox is not enabled.
func (s *Server) withVMs(h func(http.ResponseWriter, *http.Request, MicroVMs)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.MicroVMs == nil {
			writeError(w, errNoMicroVMs)
			return
		}
		h(w, r, s.cfg.MicroVMs)
	}
}

// decodeJSON decodes a JSON body of at most limit bytes into v, rejecting
// unknown fields. An empty body leaves v as it is when emptyOK.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, emptyOK bool, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) && emptyOK {
		return nil
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Errorf("request body exceeds the limit of %d bytes: %w", limit, errdefs.ErrTooLarge)
	}
	if err != nil {
		return fmt.Errorf("request body: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if dec.More() {
		return fmt.Errorf("request body: more than one JSON value: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

func checkPrefetch(p microvm.Prefetch) error {
	switch p {
	case "", microvm.PrefetchNone, microvm.PrefetchLoadingSet, microvm.PrefetchWorkingSet:
		return nil
	}
	return fmt.Errorf("prefetch: %q is not one of %s, %s, %s: %w", p,
		microvm.PrefetchNone, microvm.PrefetchLoadingSet, microvm.PrefetchWorkingSet, errdefs.ErrInvalidArgument)
}

func checkInvokeRequest(req microvm.InvokeRequest) error {
	if req.TimeoutMs < 0 || req.TimeoutMs > api.MaxTimeoutMs {
		return fmt.Errorf("timeoutMs: %d is outside 0..%d: %w", req.TimeoutMs, api.MaxTimeoutMs, errdefs.ErrInvalidArgument)
	}
	return nil
}

// invokeLimit bounds an invocation's JSON body: stdin up to MaxBodyBytes,
// base64-encoded, plus the other fields.
func (s *Server) invokeLimit() int64 { return s.cfg.MaxBodyBytes/3*4 + maxControlBytes }

// createVM serves POST /v1/vms. The body's function is the name of a
// deployed function of runtime microvm: its artifact is what the VM runs
// (never a path on the host).
func (s *Server) createVM(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	var cfg microvm.VMConfig
	if err := decodeJSON(w, r, maxControlBytes, false, &cfg); err != nil {
		writeError(w, err)
		return
	}
	if err := checkPrefetch(cfg.Prefetch); err != nil {
		writeError(w, err)
		return
	}
	if cfg.MemoryMB < 0 || cfg.MemoryMB > api.MaxMemoryMB {
		writeError(w, fmt.Errorf("memoryMB: %d is outside 1..%d: %w", cfg.MemoryMB, api.MaxMemoryMB, errdefs.ErrInvalidArgument))
		return
	}
	if (cfg.Function == "") == (cfg.Snapshot == "") {
		writeError(w, fmt.Errorf("set exactly one of function and snapshot: %w", errdefs.ErrInvalidArgument))
		return
	}
	if cfg.Function != "" {
		if cfg.Prefetch != "" {
			writeError(w, fmt.Errorf("prefetch: applies to a VM restored from a snapshot, not to a booted one: %w", errdefs.ErrInvalidArgument))
			return
		}
		path, memoryMB, cleanup, err := s.functionExecutable(cfg.Function)
		if err != nil {
			writeError(w, err)
			return
		}
		defer cleanup()
		cfg.Function = path
		if cfg.MemoryMB == 0 {
			cfg.MemoryMB = memoryMB
		}
	}
	info, err := m.CreateVM(r.Context(), cfg)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Location", "/v1/vms/"+info.ID)
	writeJSON(w, http.StatusCreated, info)
}

// functionExecutable writes the artifact of the deployed function name,
// which must be of runtime microvm, to a temporary file named after the
// function (the VM's function is the file's name) and returns its path, the
// function's memory, and what removes the file.
func (s *Server) functionExecutable(name string) (path string, memoryMB int, cleanup func(), err error) {
	if s.cfg.Functions == nil {
		return "", 0, nil, fmt.Errorf("function %q: no function service: %w", name, errdefs.ErrNotImplemented)
	}
	f, err := s.cfg.Functions.Get(name)
	if err != nil {
		return "", 0, nil, err
	}
	if f.Runtime != microvm.RuntimeName {
		return "", 0, nil, fmt.Errorf("function %q has runtime %q; a VM runs a function of runtime %s: %w", name, f.Runtime, microvm.RuntimeName, errdefs.ErrInvalidArgument)
	}
	b, err := s.cfg.Functions.Store().Artifact(f.Artifact)
	if err != nil {
		return "", 0, nil, fmt.Errorf("function %q: %w", name, err)
	}
	dir, err := os.MkdirTemp("", "kindling-vm-")
	if err != nil {
		return "", 0, nil, fmt.Errorf("function %q: %w", name, err)
	}
	cleanup = func() { os.RemoveAll(dir) }
	path = filepath.Join(dir, f.Name)
	if err := os.WriteFile(path, b, 0o755); err != nil {
		cleanup()
		return "", 0, nil, fmt.Errorf("function %q: %w", name, err)
	}
	return path, f.MemoryMB, cleanup, nil
}

func (s *Server) listVMs(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	vms := m.VMs()
	if vms == nil {
		vms = []microvm.VMInfo{}
	}
	writeJSON(w, http.StatusOK, vmList{VMs: vms})
}

func (s *Server) getVM(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	info, err := m.VM(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) deleteVM(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	if err := m.DeleteVM(r.Context(), r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) invokeVM(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	var req microvm.InvokeRequest
	if err := decodeJSON(w, r, s.invokeLimit(), true, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := checkInvokeRequest(req); err != nil {
		writeError(w, err)
		return
	}
	res, err := m.Invoke(r.Context(), r.PathValue("id"), req)
	writeVMInvocation(w, res, err)
}

// writeVMInvocation answers an invocation: the result as JSON, or a
// function failure as every invocation reports one (status by kind, an
// error body with the exit code and stderr tail). The phases are in
// Server-Timing either way.
func writeVMInvocation(w http.ResponseWriter, res microvm.InvokeResult, err error) {
	if len(res.Phases) > 0 {
		w.Header().Set(api.HeaderServerTiming, phase.ServerTiming(res.Phases))
	}
	if err != nil {
		fe, ok := errdefs.AsFunctionError(err)
		if !ok {
			writeError(w, err)
			return
		}
		status, kind := statusOf(err)
		stderr := res.Stderr
		if len(stderr) > stderrTailBytes {
			stderr = stderr[len(stderr)-stderrTailBytes:]
		}
		writeErrorInfo(w, status, api.ErrorInfo{Kind: kind, Message: err.Error(), ExitCode: fe.ExitCode, StderrTail: string(stderr)}, 0)
		return
	}
	if res.Stdout == nil {
		res.Stdout = []byte{}
	}
	if res.Stderr == nil {
		res.Stderr = []byte{}
	}
	if res.Phases == nil {
		res.Phases = []phase.Timing{}
	}
	writeJSON(w, http.StatusOK, res)
}

// stderrTailBytes is the stderr a function failure's error body carries.
const stderrTailBytes = 4 << 10

func (s *Server) snapshotVM(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	var req snapshotRequest
	if err := decodeJSON(w, r, maxControlBytes, true, &req); err != nil {
		writeError(w, err)
		return
	}
	id := r.PathValue("id")
	// The manager ends the VM even when it cannot snapshot it: refuse a
	// restored VM here, leaving it running.
	vm, err := m.VM(id)
	if err != nil {
		writeError(w, err)
		return
	}
	if !vm.Snapshottable {
		writeError(w, fmt.Errorf("vm %s was restored from snapshot %s and maps its memory privately; only a booted VM can be snapshotted: %w", id, vm.Snapshot, errdefs.ErrFailedPrecondition))
		return
	}
	info, err := m.CreateSnapshot(r.Context(), id, req.ID)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Location", "/v1/snapshots/"+info.ID)
	writeJSON(w, http.StatusCreated, info)
}

func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	snaps := m.Snapshots()
	if snaps == nil {
		snaps = []microvm.SnapshotInfo{}
	}
	writeJSON(w, http.StatusOK, snapshotList{Snapshots: snaps})
}

func (s *Server) getSnapshot(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	info, err := m.Snapshot(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// deleteSnapshot serves DELETE /v1/snapshots/{id}. A function's template
// is refused: the function's next instances are restored from it (it goes
// away with the function; copy it to keep it).
func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	id := r.PathValue("id")
	info, err := m.Snapshot(id)
	if err != nil {
		writeError(w, err)
		return
	}
	if info.Template {
		writeError(w, fmt.Errorf("snapshot %s is the template of function %q, deleted with it (copy it to keep it): %w", id, info.Function, errdefs.ErrFailedPrecondition))
		return
	}
	if err := m.DeleteSnapshot(r.Context(), id); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) copySnapshot(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	var req snapshotRequest
	if err := decodeJSON(w, r, maxControlBytes, true, &req); err != nil {
		writeError(w, err)
		return
	}
	info, err := m.CopySnapshot(r.Context(), r.PathValue("id"), req.ID)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Location", "/v1/snapshots/"+info.ID)
	writeJSON(w, http.StatusCreated, info)
}

// dropSnapshotCache serves POST /v1/snapshots/{id}/drop-cache and answers
// the snapshot as it is afterwards (cachedBytes).
func (s *Server) dropSnapshotCache(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	id := r.PathValue("id")
	if err := m.DropSnapshotCache(id); err != nil {
		writeError(w, err)
		return
	}
	info, err := m.Snapshot(id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) invokeSnapshot(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	var req snapshotInvokeRequest
	if err := decodeJSON(w, r, s.invokeLimit(), true, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := checkPrefetch(req.Prefetch); err != nil {
		writeError(w, err)
		return
	}
	if err := checkInvokeRequest(req.InvokeRequest); err != nil {
		writeError(w, err)
		return
	}
	res, err := m.InvokeSnapshot(r.Context(), r.PathValue("id"), req.InvokeRequest, req.RestoreOptions)
	writeVMInvocation(w, res, err)
}

// pageSetRoute is one of a snapshot's page sets.
type pageSetRoute struct {
	name string
	read func(MicroVMs, string) (microvm.PageSet, error)
	put  func(MicroVMs, string, microvm.PageSet) error
}

func (ps pageSetRoute) get(w http.ResponseWriter, r *http.Request, m MicroVMs) {
	set, err := ps.read(m, r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writePageSet(w, set)
}

func writePageSet(w http.ResponseWriter, set microvm.PageSet) {
	if set.Extents == nil {
		set.Extents = []microvm.Extent{}
	}
	writeJSON(w, http.StatusOK, set)
}

// putPageSet serves PUT (replace; an empty set removes it) and PATCH
// (merge: the body's pages the set lacks are added after its own) of a
// snapshot's page set, and answers the set stored.
func (s *Server) putPageSet(w http.ResponseWriter, r *http.Request, m MicroVMs, ps pageSetRoute, merge bool) {
	var body microvm.PageSet
	if err := decodeJSON(w, r, maxPageSetBytes, false, &body); err != nil {
		writeError(w, err)
		return
	}
	id := r.PathValue("id")
	// One read-modify-write at a time, so concurrent PATCHes all count.
	s.pageSetMu.Lock()
	defer s.pageSetMu.Unlock()
	set := body
	if merge {
		cur, err := ps.read(m, id)
		if err != nil {
			writeError(w, err)
			return
		}
		if set, err = cur.Union(body); err != nil {
			writeError(w, fmt.Errorf("%s of snapshot %s: %w: %w", ps.name, id, err, errdefs.ErrInvalidArgument))
			return
		}
	}
	if err := ps.put(m, id, set); err != nil {
		writeError(w, err)
		return
	}
	set, err := ps.read(m, id)
	if err != nil {
		writeError(w, err)
		return
	}
	writePageSet(w, set)
}
