// Package client is the typed Go client of kindling's HTTP API, used by
// the CLI and by tests.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
)

// DefaultURL is the daemon's default address.
const DefaultURL = "http://127.0.0.1:8080"

// Client talks to one kindling daemon.
type Client struct {
	base string
	http *http.Client
}

// New returns a client for the daemon at baseURL (DefaultURL if empty).
func New(baseURL string) *Client {
	if baseURL == "" {
		baseURL = DefaultURL
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), http: &http.Client{}}
}

// FromEnv returns a client for $KINDLING_URL, or DefaultURL.
func FromEnv() *Client { return New(os.Getenv("KINDLING_URL")) }

// Error is an error answered by the daemon. It unwraps to the errdefs
// sentinel matching its status, so errors.Is(err, errdefs.ErrNotFound) works.
type Error struct {
	Status int
	Info   api.ErrorInfo
}

func (e *Error) Error() string {
	if e.Info.Kind != "" && !strings.Contains(e.Info.Message, e.Info.Kind) {
		return e.Info.Kind + ": " + e.Info.Message
	}
	return e.Info.Message
}

// Unwrap maps the HTTP status back to kindling's error vocabulary.
func (e *Error) Unwrap() error {
	switch e.Status {
	case http.StatusBadRequest:
		return errdefs.ErrInvalidArgument
	case http.StatusNotFound:
		return errdefs.ErrNotFound
	case http.StatusConflict:
		return errdefs.ErrAlreadyExists
	case http.StatusRequestEntityTooLarge:
		return errdefs.ErrTooLarge
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return errdefs.ErrUnavailable
	case http.StatusNotImplemented:
		return errdefs.ErrNotImplemented
	case http.StatusPreconditionFailed:
		return errdefs.ErrFailedPrecondition
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach kindling at %s (is `kindling serve` running? set --server or KINDLING_URL): %w", c.base, err)
	}
	return resp, nil
}

// decodeError reads an error response.
func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var eb api.ErrorBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Message == "" {
		eb.Error = api.ErrorInfo{Kind: "http", Message: fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(b)))}
	}
	return &Error{Status: resp.StatusCode, Info: eb.Error}
}

func (c *Client) json(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	hdr := http.Header{}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
		hdr.Set("Content-Type", "application/json")
	}
	resp, err := c.do(ctx, method, path, body, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s response: %w", method, path, err)
	}
	return nil
}

// UploadArtifact uploads an artifact and returns its digest.
func (c *Client) UploadArtifact(ctx context.Context, r io.Reader) (api.ArtifactRef, error) {
	var ref api.ArtifactRef
	resp, err := c.do(ctx, http.MethodPost, "/v1/artifacts", r, http.Header{"Content-Type": {"application/wasm"}})
	if err != nil {
		return ref, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return ref, decodeError(resp)
	}
	return ref, json.NewDecoder(resp.Body).Decode(&ref)
}

// ImportImage uploads a container image tarball (docker-archive or OCI
// layout) to the daemon's image store, under the given names.
func (c *Client) ImportImage(ctx context.Context, r io.Reader, names ...string) (api.ImageRef, error) {
	var ref api.ImageRef
	q := url.Values{"name": names}
	resp, err := c.do(ctx, http.MethodPost, "/v1/images?"+q.Encode(), r, http.Header{"Content-Type": {"application/x-tar"}})
	if err != nil {
		return ref, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return ref, decodeError(resp)
	}
	return ref, json.NewDecoder(resp.Body).Decode(&ref)
}

// Deploy creates or replaces a function.
func (c *Client) Deploy(ctx context.Context, name string, spec api.FunctionSpec) (api.Function, error) {
	var f api.Function
	err := c.json(ctx, http.MethodPut, "/v1/functions/"+url.PathEscape(name), spec, &f)
	return f, err
}

// Get returns a function.
func (c *Client) Get(ctx context.Context, name string) (api.Function, error) {
	var f api.Function
	err := c.json(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name), nil, &f)
	return f, err
}

// List returns all functions.
func (c *Client) List(ctx context.Context) ([]api.Function, error) {
	var l api.FunctionList
	err := c.json(ctx, http.MethodGet, "/v1/functions", nil, &l)
	return l.Functions, err
}

// Delete removes a function.
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.json(ctx, http.MethodDelete, "/v1/functions/"+url.PathEscape(name), nil, nil)
}

// Invocation returns an invocation record.
func (c *Client) Invocation(ctx context.Context, id string) (api.Invocation, error) {
	var inv api.Invocation
	err := c.json(ctx, http.MethodGet, "/v1/invocations/"+url.PathEscape(id), nil, &inv)
	return inv, err
}

// InvokeResult is a successful invocation's response.
type InvokeResult struct {
	Status       int
	Header       http.Header
	Body         []byte
	InvocationID string
	Cold         bool
	Phases       []phase.Timing
}

// Invoke calls a function with body. A function failure is returned as an
// *Error whose Info carries the kind, exit code and stderr tail; the
// result's headers (invocation ID, phases) are returned with it.
func (c *Client) Invoke(ctx context.Context, name string, body io.Reader) (*InvokeResult, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/functions/"+url.PathEscape(name)+"/invoke", body, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	res := &InvokeResult{
		Status:       resp.StatusCode,
		Header:       resp.Header,
		InvocationID: resp.Header.Get(api.HeaderInvocationID),
		Cold:         resp.Header.Get(api.HeaderColdStart) == "true",
		Phases:       ParseServerTiming(resp.Header.Get(api.HeaderServerTiming)),
	}
	if resp.StatusCode >= 400 {
		return res, decodeError(resp)
	}
	res.Body, err = io.ReadAll(resp.Body)
	return res, err
}

// LogOptions select a function's log lines.
type LogOptions struct {
	Since  string // RFC 3339 time or a duration before now ("10m")
	Tail   int    // only the last N lines
	Follow bool   // keep streaming new lines until ctx is done
}

// Logs copies a function's logs to w.
func (c *Client) Logs(ctx context.Context, name string, opts LogOptions, w io.Writer) error {
	q := url.Values{}
	if opts.Since != "" {
		q.Set("since", opts.Since)
	}
	if opts.Tail > 0 {
		q.Set("tail", strconv.Itoa(opts.Tail))
	}
	if opts.Follow {
		q.Set("follow", "true")
	}
	return c.stream(ctx, "/v1/functions/"+url.PathEscape(name)+"/logs", q, w)
}

// InvocationLogs copies an invocation's output to w; with follow, until
// the invocation ends.
func (c *Client) InvocationLogs(ctx context.Context, id string, follow bool, w io.Writer) error {
	q := url.Values{}
	if follow {
		q.Set("follow", "true")
	}
	return c.stream(ctx, "/v1/invocations/"+url.PathEscape(id)+"/logs", q, w)
}

// InvokeAsync submits an invocation to run in the background and returns
// its (queued) record; fetch the result with Invocation.
func (c *Client) InvokeAsync(ctx context.Context, name string, body io.Reader) (api.Invocation, error) {
	var inv api.Invocation
	resp, err := c.do(ctx, http.MethodPost, "/v1/functions/"+url.PathEscape(name)+"/invoke", body,
		http.Header{"Prefer": {"respond-async"}})
	if err != nil {
		return inv, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return inv, decodeError(resp)
	}
	return inv, json.NewDecoder(resp.Body).Decode(&inv)
}

func (c *Client) stream(ctx context.Context, path string, q url.Values, w io.Writer) error {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil {
		return nil // the caller stopped following
	}
	return err
}

// Healthy reports whether the daemon answers /healthz.
func (c *Client) Healthy(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}

// ParseServerTiming parses a Server-Timing header written by kindling.
func ParseServerTiming(h string) []phase.Timing {
	var out []phase.Timing
	for _, part := range strings.Split(h, ",") {
		fields := strings.Split(strings.TrimSpace(part), ";")
		if fields[0] == "" {
			continue
		}
		t := phase.Timing{Name: phase.Name(fields[0])}
		for _, f := range fields[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
			switch k {
			case "dur":
				ms, _ := strconv.ParseFloat(v, 64)
				t.Duration = time.Duration(ms * float64(time.Millisecond))
			case "desc":
				t.Detail = strings.Trim(v, `"`)
			}
		}
		out = append(out, t)
	}
	return out
}
