package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/kindling-dev/kindling/api"
)

// The VM and snapshot API of the microvm sandbox (/v1/vms, /v1/snapshots),
// served by a daemon started with --microvm. Its types are package api's,
// shared with the server and the sandbox; the aliases below keep their
// names in this package.
type (
	Prefetch        = api.Prefetch
	VMConfig        = api.VMConfig
	VMInfo          = api.VMInfo
	SnapshotInfo    = api.SnapshotInfo
	PageSet         = api.PageSet
	Extent          = api.Extent
	PageSetKind     = api.PageSetKind
	VMInvokeRequest = api.VMInvokeRequest
	VMInvokeResult  = api.VMInvokeResult
	RestoreOptions  = api.RestoreOptions
)

// Prefetch modes of a restore.
const (
	PrefetchNone       = api.PrefetchNone       // the guest faults its pages in
	PrefetchLoadingSet = api.PrefetchLoadingSet // FaaSnap: fadvise the loading set, racing the guest
	PrefetchWorkingSet = api.PrefetchWorkingSet // REAP: read the working set in, then resume the guest
)

// A snapshot's page sets.
const (
	LoadingSet = api.LoadingSet // FaaSnap: pages found resident, scan by scan
	WorkingSet = api.WorkingSet // REAP: pages a restored VM touched
)

func vmPath(id string) string       { return "/v1/vms/" + url.PathEscape(id) }
func snapshotPath(id string) string { return "/v1/snapshots/" + url.PathEscape(id) }

// CreateVM boots or restores a VM and returns when its agent is ready.
func (c *Client) CreateVM(ctx context.Context, cfg VMConfig) (VMInfo, error) {
	var info VMInfo
	err := c.json(ctx, http.MethodPost, "/v1/vms", cfg, &info)
	return info, err
}

// VMs lists the VMs, by ID.
func (c *Client) VMs(ctx context.Context) ([]VMInfo, error) {
	var l struct {
		VMs []VMInfo `json:"vms"`
	}
	err := c.json(ctx, http.MethodGet, "/v1/vms", nil, &l)
	return l.VMs, err
}

// VM describes one VM.
func (c *Client) VM(ctx context.Context, id string) (VMInfo, error) {
	var info VMInfo
	err := c.json(ctx, http.MethodGet, vmPath(id), nil, &info)
	return info, err
}

// DeleteVM destroys a VM.
func (c *Client) DeleteVM(ctx context.Context, id string) error {
	return c.json(ctx, http.MethodDelete, vmPath(id), nil, nil)
}

// InvokeVM runs one invocation in a running VM. A function failure is
// returned as an *Error whose Info carries the kind, exit code and stderr
// tail, with a result holding the phases.
func (c *Client) InvokeVM(ctx context.Context, id string, req VMInvokeRequest) (*VMInvokeResult, error) {
	return c.invokeJSON(ctx, vmPath(id)+"/invoke", req)
}

// SnapshotVM saves a booted VM as snapshot snapshotID (generated when
// empty); the VM ends.
func (c *Client) SnapshotVM(ctx context.Context, vmID, snapshotID string) (SnapshotInfo, error) {
	var info SnapshotInfo
	err := c.json(ctx, http.MethodPost, vmPath(vmID)+"/snapshot", struct {
		ID string `json:"id,omitempty"`
	}{snapshotID}, &info)
	return info, err
}

// Snapshots lists the snapshots, by ID.
func (c *Client) Snapshots(ctx context.Context) ([]SnapshotInfo, error) {
	var l struct {
		Snapshots []SnapshotInfo `json:"snapshots"`
	}
	err := c.json(ctx, http.MethodGet, "/v1/snapshots", nil, &l)
	return l.Snapshots, err
}

// Snapshot describes one snapshot.
func (c *Client) Snapshot(ctx context.Context, id string) (SnapshotInfo, error) {
	var info SnapshotInfo
	err := c.json(ctx, http.MethodGet, snapshotPath(id), nil, &info)
	return info, err
}

// DeleteSnapshot removes a snapshot.
func (c *Client) DeleteSnapshot(ctx context.Context, id string) error {
	return c.json(ctx, http.MethodDelete, snapshotPath(id), nil, nil)
}

// CopySnapshot copies snapshot src, with its page sets, to dst (generated
// when empty).
func (c *Client) CopySnapshot(ctx context.Context, src, dst string) (SnapshotInfo, error) {
	var info SnapshotInfo
	err := c.json(ctx, http.MethodPost, snapshotPath(src)+"/copy", struct {
		ID string `json:"id,omitempty"`
	}{dst}, &info)
	return info, err
}

// DropSnapshotCache evicts the snapshot's files from the host's page cache
// and returns the snapshot as it is afterwards.
func (c *Client) DropSnapshotCache(ctx context.Context, id string) (SnapshotInfo, error) {
	var info SnapshotInfo
	err := c.json(ctx, http.MethodPost, snapshotPath(id)+"/drop-cache", nil, &info)
	return info, err
}

// PageSet returns one of a snapshot's page sets (empty when none).
func (c *Client) PageSet(ctx context.Context, id string, kind PageSetKind) (PageSet, error) {
	var set PageSet
	err := c.json(ctx, http.MethodGet, snapshotPath(id)+"/"+url.PathEscape(string(kind)), nil, &set)
	return set, err
}

// PutPageSet replaces one of a snapshot's page sets (an empty set removes
// it) and returns the set stored.
func (c *Client) PutPageSet(ctx context.Context, id string, kind PageSetKind, set PageSet) (PageSet, error) {
	var out PageSet
	err := c.json(ctx, http.MethodPut, snapshotPath(id)+"/"+url.PathEscape(string(kind)), set, &out)
	return out, err
}

// MergePageSet adds the pages of set a snapshot's page set lacks (after its
// own) and returns the set stored.
func (c *Client) MergePageSet(ctx context.Context, id string, kind PageSetKind, set PageSet) (PageSet, error) {
	var out PageSet
	err := c.json(ctx, http.MethodPatch, snapshotPath(id)+"/"+url.PathEscape(string(kind)), set, &out)
	return out, err
}

// InvokeSnapshot restores a VM from a snapshot as opts say, runs one
// invocation in it and, unless opts.Keep, deletes it. The phases cover the
// restore and the invocation. Failures are returned as InvokeVM's are.
func (c *Client) InvokeSnapshot(ctx context.Context, id string, req VMInvokeRequest, opts RestoreOptions) (*VMInvokeResult, error) {
	return c.invokeJSON(ctx, snapshotPath(id)+"/invoke", struct {
		VMInvokeRequest
		RestoreOptions
	}{req, opts})
}

func (c *Client) invokeJSON(ctx context.Context, path string, in any) (*VMInvokeResult, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodPost, path, bytes.NewReader(b), http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return &VMInvokeResult{Phases: ParseServerTiming(resp.Header.Get(api.HeaderServerTiming))}, decodeError(resp)
	}
	var res VMInvokeResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return nil, fmt.Errorf("decode POST %s response: %w", path, err)
	}
	return &res, nil
}
