package server_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/client"
	"github.com/kindling-dev/kindling/daemon"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox/microvm/microvmtest"
	"github.com/kindling-dev/kindling/server"
)

// startMicroVM runs a daemon with the microvm sandbox (skipping the test
// when the host lacks QEMU or a guest kernel) and returns it with the
// fixtures of sandbox/microvm/testdata named, built for the guest.
func startMicroVM(t *testing.T, fixtures ...string) (h *harness, bins map[string][]byte) {
	t.Helper()
	microvmtest.SkipUnlessHost(t)
	ctx := context.Background()
	agent, paths := microvmtest.Build(t, fixtures...)
	bins = map[string][]byte{}
	for name, path := range paths {
		var err error
		if bins[name], err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
	}
	d, err := daemon.New(ctx, daemon.Config{DataDir: t.TempDir(), OCIRuntime: "none", MicroVM: true, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Server)
	h = &harness{t: t, d: d, srv: srv, c: newClient(srv.URL)}
	t.Cleanup(h.stop)
	if _, err := h.c.VMs(ctx); errors.Is(err, errdefs.ErrNotImplemented) {
		t.Skipf("the microvm sandbox is not available on this host: %v", err)
	}
	return h, bins
}

// wantKind checks that err is an API error of the given status and kind.
func wantKind(t *testing.T, what string, err error, status int, kind string) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != status || ce.Info.Kind != kind {
		t.Fatalf("%s: got %v, want %d %s", what, err, status, kind)
	}
}

// TestMicroVMAPI_SnapshotFlow walks the VM and snapshot API through the
// HTTP client as a FaaSnap/REAP rig does: boot a VM for a deployed
// function, invoke it, snapshot it, copy the snapshot, restore from the
// copy recording its working set from a dropped cache, restore again
// prefetching it, edit the loading set, and clean up.
func TestMicroVMAPI_SnapshotFlow(t *testing.T) {
	h, bins := startMicroVM(t, "counter", "exit")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := h.c
	h.mustDeploy("counter", bins["counter"], api.FunctionSpec{Runtime: "microvm", MemoryMB: 128, TimeoutMs: 60_000})
	h.mustDeploy("exit", bins["exit"], api.FunctionSpec{Runtime: "microvm", MemoryMB: 128, TimeoutMs: 60_000})
	h.mustDeploy("hello-wasm", testmodules.Hello, api.FunctionSpec{})

	start := time.Now()
	vm, err := c.CreateVM(ctx, client.VMConfig{ID: "boot1", Function: "counter"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("booted in %v: %+v", time.Since(start).Round(time.Millisecond), vm)
	if vm.ID != "boot1" || vm.Function != "counter" || vm.State != "running" || !vm.Snapshottable || vm.MemoryMB != 128 || vm.PID == 0 {
		t.Fatalf("created vm = %+v", vm)
	}
	if vms, err := c.VMs(ctx); err != nil || !slices.ContainsFunc(vms, func(v client.VMInfo) bool { return v.ID == "boot1" }) {
		t.Fatalf("VMs = %+v, %v", vms, err)
	}
	for _, want := range []string{"11", "22"} { // state lives on within a VM
		res, err := c.InvokeVM(ctx, "boot1", client.VMInvokeRequest{})
		if err != nil || string(res.Stdout) != want || res.VM != "boot1" || len(res.Phases) == 0 {
			t.Fatalf("invoke boot1 = %+v, %v; want %q", res, err, want)
		}
	}
	if got, err := c.VM(ctx, "boot1"); err != nil || got.Invocations != 2 {
		t.Fatalf("VM(boot1) = %+v, %v", got, err)
	}

	snap, err := c.SnapshotVM(ctx, "boot1", "warm")
	if err != nil {
		t.Fatal(err)
	}
	if snap.ID != "warm" || snap.Function != "counter" || snap.StateBytes == 0 || snap.Template || snap.FromVM != "boot1" {
		t.Fatalf("snapshot = %+v", snap)
	}
	_, err = c.VM(ctx, "boot1")
	wantKind(t, "the snapshotted VM", err, http.StatusNotFound, "not_found")
	cp, err := c.CopySnapshot(ctx, "warm", "warm2")
	if err != nil || cp.ID != "warm2" {
		t.Fatalf("copy = %+v, %v", cp, err)
	}
	_, err = c.CopySnapshot(ctx, "warm", "warm2")
	wantKind(t, "copy onto an existing snapshot", err, http.StatusConflict, "already_exists")

	// REAP: record the working set in a restore from disk.
	res, err := c.InvokeSnapshot(ctx, "warm2", client.VMInvokeRequest{}, client.RestoreOptions{DropCache: true, RecordWorkingSet: true})
	if err != nil || string(res.Stdout) != "33" || res.VM != "" {
		t.Fatalf("invoke warm2 recording = %+v, %v; want %q from a deleted VM", res, err, "33")
	}
	if !hasPhase(res.Phases, phase.Restore) || !hasPhase(res.Phases, phase.Run) {
		t.Errorf("phases %v lack restore or run", res.Phases)
	}
	ws, err := c.PageSet(ctx, "warm2", client.WorkingSet)
	if err != nil || ws.Pages() == 0 || ws.PageSize != os.Getpagesize() {
		t.Fatalf("working set = %d pages (%+v), %v", ws.Pages(), ws.PageSize, err)
	}
	if info, err := c.Snapshot(ctx, "warm2"); err != nil || info.WorkingSetPages != ws.Pages() {
		t.Fatalf("Snapshot(warm2) = %+v, %v; want %d working-set pages", info, err, ws.Pages())
	}
	if orig, _ := c.PageSet(ctx, "warm", client.WorkingSet); orig.Pages() != 0 {
		t.Errorf("the copy's recording changed the original's working set: %d pages", orig.Pages())
	}
	t.Logf("working set: %d pages in %d extents", ws.Pages(), len(ws.Extents))

	// Restore prefetching it, keeping the VM.
	res, err = c.InvokeSnapshot(ctx, "warm2", client.VMInvokeRequest{}, client.RestoreOptions{
		Prefetch: client.PrefetchWorkingSet, DropCache: true, Keep: true})
	if err != nil || string(res.Stdout) != "33" || res.VM == "" {
		t.Fatalf("invoke warm2 prefetching = %+v, %v", res, err)
	}
	t.Logf("restore prefetching the working set: %v", res.Phases)
	kept, err := c.VM(ctx, res.VM)
	if err != nil || kept.Snapshot != "warm2" || kept.Snapshottable {
		t.Fatalf("kept VM = %+v, %v", kept, err)
	}
	_, err = c.SnapshotVM(ctx, kept.ID, "")
	wantKind(t, "snapshot of a restored VM", err, http.StatusPreconditionFailed, "failed_precondition")
	if res, err := c.InvokeVM(ctx, kept.ID, client.VMInvokeRequest{}); err != nil || string(res.Stdout) != "44" {
		t.Fatalf("invoke the kept VM = %+v, %v; want 44", res, err)
	}
	if err := c.DeleteVM(ctx, kept.ID); err != nil {
		t.Fatal(err)
	}

	// A function failure is reported as other invocations report one; a
	// function's template can be restored like any snapshot.
	snaps, err := c.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var exitTemplate string
	for _, s := range snaps {
		if s.Template && s.Function == "exit" {
			exitTemplate = s.ID
		}
	}
	res, err = c.InvokeSnapshot(ctx, exitTemplate, client.VMInvokeRequest{}, client.RestoreOptions{})
	wantKind(t, "invoke a failing function", err, http.StatusInternalServerError, "exit")
	if ce := apiError(t, err); ce.Info.ExitCode != 3 || ce.Info.StderrTail != "bad request\n" {
		t.Errorf("failure = %+v, want exit code 3 and the stderr tail", ce.Info)
	}
	if res == nil || !hasPhase(res.Phases, phase.Restore) || !hasPhase(res.Phases, phase.Run) {
		t.Errorf("a failed invocation's phases = %+v", res)
	}

	// Edit the loading set: merge part of the working set, then all of it.
	ls, err := c.PageSet(ctx, "warm2", client.LoadingSet)
	if err != nil || ls.Pages() != 0 || ls.Extents == nil {
		t.Fatalf("loading set before = %+v, %v", ls, err)
	}
	half := client.PageSet{PageSize: ws.PageSize, Extents: ws.Extents[:(len(ws.Extents)+1)/2]}
	if ls, err = c.MergePageSet(ctx, "warm2", client.LoadingSet, half); err != nil || ls.Pages() != half.Pages() {
		t.Fatalf("merge half = %d pages, %v; want %d", ls.Pages(), err, half.Pages())
	}
	if ls, err = c.MergePageSet(ctx, "warm2", client.LoadingSet, ws); err != nil || ls.Pages() != ws.Pages() {
		t.Fatalf("merge all = %d pages, %v; want %d", ls.Pages(), err, ws.Pages())
	}
	if !reflect.DeepEqual(ls.Extents[:len(half.Extents)], half.Extents) {
		t.Errorf("merging reordered the set's own extents")
	}
	if info, _ := c.Snapshot(ctx, "warm2"); info.LoadingSetPages != ws.Pages() {
		t.Errorf("loadingSetPages = %d, want %d", info.LoadingSetPages, ws.Pages())
	}
	res, err = c.InvokeSnapshot(ctx, "warm2", client.VMInvokeRequest{}, client.RestoreOptions{Prefetch: client.PrefetchLoadingSet})
	if err != nil || string(res.Stdout) != "33" {
		t.Fatalf("invoke warm2 with the loading set = %+v, %v", res, err)
	}
	_, err = c.MergePageSet(ctx, "warm2", client.LoadingSet, client.PageSet{PageSize: ws.PageSize, Extents: []client.Extent{{Start: 1 << 40, Pages: 1}}})
	wantKind(t, "an extent outside the memory file", err, http.StatusBadRequest, "invalid_argument")
	_, err = c.PutPageSet(ctx, "warm2", client.LoadingSet, client.PageSet{PageSize: 3, Extents: []client.Extent{{Start: 1, Pages: 1}}})
	wantKind(t, "a foreign page size", err, http.StatusBadRequest, "invalid_argument")
	if ls, err = c.PutPageSet(ctx, "warm2", client.LoadingSet, client.PageSet{}); err != nil || ls.Pages() != 0 {
		t.Fatalf("put an empty loading set = %+v, %v", ls, err)
	}

	info, err := c.DropSnapshotCache(ctx, "warm2")
	if err != nil || info.ID != "warm2" {
		t.Fatalf("drop cache = %+v, %v", info, err)
	}
	t.Logf("after drop-cache %d bytes of warm2 are cached", info.CachedBytes)

	// Bad requests.
	_, err = c.InvokeSnapshot(ctx, "warm2", client.VMInvokeRequest{}, client.RestoreOptions{Prefetch: "eager"})
	wantKind(t, "a bad prefetch mode", err, http.StatusBadRequest, "invalid_argument")
	_, err = c.CreateVM(ctx, client.VMConfig{Function: "hello-wasm"})
	wantKind(t, "a VM for a wasm function", err, http.StatusBadRequest, "invalid_argument")
	_, err = c.CreateVM(ctx, client.VMConfig{Function: "nope"})
	wantKind(t, "a VM for an unknown function", err, http.StatusNotFound, "not_found")
	_, err = c.CreateVM(ctx, client.VMConfig{Snapshot: "nope"})
	wantKind(t, "a VM from an unknown snapshot", err, http.StatusNotFound, "not_found")
	_, err = c.CreateVM(ctx, client.VMConfig{ID: "bad/id", Snapshot: "warm2"})
	wantKind(t, "a bad VM id", err, http.StatusBadRequest, "invalid_argument")

	// The functions' templates are listed and protected.
	snaps, err = c.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range snaps {
		ids = append(ids, s.ID)
		if s.Template {
			err := c.DeleteSnapshot(ctx, s.ID)
			wantKind(t, "deleting a template", err, http.StatusPreconditionFailed, "failed_precondition")
		}
	}
	if !slices.Contains(ids, "warm") || !slices.Contains(ids, "warm2") || len(ids) != 4 {
		t.Errorf("snapshots = %v, want warm, warm2 and the templates of counter and exit", ids)
	}

	for _, id := range []string{"warm", "warm2"} {
		if err := c.DeleteSnapshot(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	notFound := map[string]func() error{
		"get snapshot":    func() error { _, err := c.Snapshot(ctx, "warm"); return err },
		"delete snapshot": func() error { return c.DeleteSnapshot(ctx, "warm2") },
		"copy":            func() error { _, err := c.CopySnapshot(ctx, "warm", ""); return err },
		"drop-cache":      func() error { _, err := c.DropSnapshotCache(ctx, "warm2"); return err },
		"working set":     func() error { _, err := c.PageSet(ctx, "warm2", client.WorkingSet); return err },
		"put loading set": func() error { _, err := c.PutPageSet(ctx, "warm2", client.LoadingSet, client.PageSet{}); return err },
		"merge working set": func() error {
			_, err := c.MergePageSet(ctx, "warm2", client.WorkingSet, client.PageSet{})
			return err
		},
		"invoke snapshot": func() error {
			_, err := c.InvokeSnapshot(ctx, "warm2", client.VMInvokeRequest{}, client.RestoreOptions{})
			return err
		},
		"get vm":      func() error { _, err := c.VM(ctx, kept.ID); return err },
		"delete vm":   func() error { return c.DeleteVM(ctx, "boot1") },
		"invoke vm":   func() error { _, err := c.InvokeVM(ctx, "boot1", client.VMInvokeRequest{}); return err },
		"snapshot vm": func() error { _, err := c.SnapshotVM(ctx, "boot1", ""); return err },
	}
	for what, call := range notFound {
		wantKind(t, what, call(), http.StatusNotFound, "not_found")
	}
	vms, err := c.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		if v.ID == "boot1" || v.Snapshot == "warm" || v.Snapshot == "warm2" {
			t.Errorf("VM left behind: %+v", v)
		}
	}
}

// Without the microvm sandbox every VM and snapshot route says so.
func TestMicroVMAPI_NotEnabled(t *testing.T) {
	h := start(t, t.TempDir())
	ctx := context.Background()
	calls := map[string]func() error{
		"vms":       func() error { _, err := h.c.VMs(ctx); return err },
		"create vm": func() error { _, err := h.c.CreateVM(ctx, client.VMConfig{Function: "x"}); return err },
		"snapshots": func() error { _, err := h.c.Snapshots(ctx); return err },
		"merge":     func() error { _, err := h.c.MergePageSet(ctx, "s", client.LoadingSet, client.PageSet{}); return err },
		"invoke": func() error {
			_, err := h.c.InvokeSnapshot(ctx, "s", client.VMInvokeRequest{}, client.RestoreOptions{})
			return err
		},
		"delete vm":    func() error { return h.c.DeleteVM(ctx, "v") },
		"drop-cache":   func() error { _, err := h.c.DropSnapshotCache(ctx, "s"); return err },
		"snapshot vm":  func() error { _, err := h.c.SnapshotVM(ctx, "v", ""); return err },
		"working set":  func() error { _, err := h.c.PageSet(ctx, "s", client.WorkingSet); return err },
		"put page set": func() error { _, err := h.c.PutPageSet(ctx, "s", client.WorkingSet, client.PageSet{}); return err },
	}
	for what, call := range calls {
		err := call()
		wantKind(t, what, err, http.StatusNotImplemented, "not_implemented")
		if !strings.Contains(err.Error(), "microvm sandbox not enabled (start the daemon with --microvm") {
			t.Errorf("%s: message %q does not say how to enable the sandbox", what, err)
		}
	}
}

// unreachableVMs is a MicroVMs whose methods must not be called: requests
// the server rejects never reach the manager.
type unreachableVMs struct{ server.MicroVMs }

// Malformed requests are rejected before they reach the manager.
func TestMicroVMAPI_BadRequests(t *testing.T) {
	srv := server.New(server.Config{MicroVMs: unreachableVMs{}, MaxBodyBytes: 1 << 10})
	big := `{"stdin":"` + strings.Repeat("A", 2<<20) + `"}`
	tests := []struct {
		name, method, path, body string
		status                   int
		kind                     string
	}{
		{"bad prefetch on invoke", "POST", "/v1/snapshots/s/invoke", `{"prefetch":"eager"}`, 400, "invalid_argument"},
		{"bad prefetch on create", "POST", "/v1/vms", `{"snapshot":"s","prefetch":"all"}`, 400, "invalid_argument"},
		{"prefetch on a boot", "POST", "/v1/vms", `{"function":"f","prefetch":"none"}`, 400, "invalid_argument"},
		{"function and snapshot", "POST", "/v1/vms", `{"function":"f","snapshot":"s"}`, 400, "invalid_argument"},
		{"neither", "POST", "/v1/vms", `{}`, 400, "invalid_argument"},
		{"empty create body", "POST", "/v1/vms", ``, 400, "invalid_argument"},
		{"negative memory", "POST", "/v1/vms", `{"snapshot":"s","memoryMB":-1}`, 400, "invalid_argument"},
		{"unknown field", "POST", "/v1/snapshots/s/invoke", `{"prefetchMode":"none"}`, 400, "invalid_argument"},
		{"not JSON", "POST", "/v1/vms/v/invoke", `stdin`, 400, "invalid_argument"},
		{"two values", "POST", "/v1/vms/v/snapshot", `{} {}`, 400, "invalid_argument"},
		{"negative timeout", "POST", "/v1/vms/v/invoke", `{"timeoutMs":-5}`, 400, "invalid_argument"},
		{"stdin not base64", "POST", "/v1/vms/v/invoke", `{"stdin":"***"}`, 400, "invalid_argument"},
		{"page set not an object", "PUT", "/v1/snapshots/s/working-set", `[1,2]`, 400, "invalid_argument"},
		{"page set without a body", "PATCH", "/v1/snapshots/s/loading-set", ``, 400, "invalid_argument"},
		{"invocation too large", "POST", "/v1/snapshots/s/invoke", big, 413, "too_large"},
		{"no such route", "POST", "/v1/snapshots/s/restore", `{}`, 404, "not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
			checkErrorBody(t, rec.Result(), tc.status, tc.kind)
		})
	}
}
