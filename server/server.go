// Package server is kindling's HTTP API: the /v1 management and invocation
// routes, the /fn/{name}/ HTTP trigger, health and metrics. Errors are
// translated from the errdefs vocabulary to HTTP status codes in one place
// (writeError), always as a JSON body {"error":{"kind":…,"message":…}}.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/function"
	"github.com/kindling-dev/kindling/logs"
	"github.com/kindling-dev/kindling/metrics"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/tracing"
	"github.com/kindling-dev/kindling/wagi"
)

// DefaultMaxArtifactBytes bounds uploaded artifacts.
const DefaultMaxArtifactBytes = 256 << 20

// ImageImporter imports container image tarballs (docker-archive or OCI
// layout) for sandboxes that run images.
type ImageImporter interface {
	ImportFile(ctx context.Context, path string, names ...string) (api.ImageRef, error)
}

// Config configures a Server.
type Config struct {
	Images           ImageImporter // nil: no image sandbox on this host
	Functions        *function.Service
	Logs             *logs.Dir
	Metrics          *metrics.Metrics
	Tracer           *tracing.Tracer // extracts incoming trace context; nil disables
	Logger           *slog.Logger
	MaxBodyBytes     int64 // invocation bodies; default api.DefaultMaxBodyBytes
	MaxArtifactBytes int64 // artifact uploads; default DefaultMaxArtifactBytes
	// MicroVMs serves /v1/vms and /v1/snapshots; nil (the microvm sandbox
	// is not enabled) answers them 501.
	MicroVMs MicroVMs
}

// Server serves the API. Create it with New and use it as an http.Handler.
type Server struct {
	cfg    Config
	mux    *http.ServeMux
	routes []string
	ready  atomic.Bool
	// pageSetMu serializes the microvm page-set writes (PATCH reads,
	// merges and writes).
	pageSetMu sync.Mutex
}

// New returns the API handler.
func New(cfg Config) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = api.DefaultMaxBodyBytes
	}
	if cfg.MaxArtifactBytes <= 0 {
		cfg.MaxArtifactBytes = DefaultMaxArtifactBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.ready.Store(true)
	s.handle("POST /v1/artifacts", s.uploadArtifact)
	s.handle("POST /v1/images", s.importImage)
	s.handle("GET /v1/functions", s.listFunctions)
	s.handle("GET /v1/functions/{name}", s.getFunction)
	s.handle("PUT /v1/functions/{name}", s.putFunction)
	s.handle("DELETE /v1/functions/{name}", s.deleteFunction)
	s.handle("POST /v1/functions/{name}/invoke", s.invoke)
	s.handle("GET /v1/functions/{name}/logs", s.functionLogs)
	s.handle("GET /v1/invocations/{id}", s.getInvocation)
	s.handle("GET /v1/invocations/{id}/logs", s.invocationLogs)
	s.microVMRoutes()
	s.handle("/fn/{name}", s.trigger)
	s.handle("/fn/{name}/{path...}", s.trigger)
	s.handle("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	s.handle("GET /readyz", s.readyz)
	if cfg.Metrics != nil {
		s.handle("GET /metrics", cfg.Metrics.Handler().ServeHTTP)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("no route for %s %s: %w", r.Method, r.URL.Path, errdefs.ErrNotFound))
	})
	return s
}

func (s *Server) handle(pattern string, h http.HandlerFunc) {
	s.routes = append(s.routes, pattern)
	s.mux.HandleFunc(pattern, h)
}

// Routes lists the route patterns served ("METHOD /path/{var}"; no method
// means any), for the test that keeps docs/openapi.yaml in sync.
func (s *Server) Routes() []string { return append([]string(nil), s.routes...) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetReady sets what /readyz answers (false while draining).
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		writeError(w, fmt.Errorf("shutting down: %w", errdefs.ErrUnavailable))
		return
	}
	io.WriteString(w, "ready\n")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// statusByKind maps error kinds (errdefs.KindOf) to HTTP statuses.
var statusByKind = map[string]int{
	"invalid_argument":    http.StatusBadRequest,
	"not_found":           http.StatusNotFound,
	"already_exists":      http.StatusConflict,
	"too_large":           http.StatusRequestEntityTooLarge,
	"unavailable":         http.StatusServiceUnavailable,
	"not_implemented":     http.StatusNotImplemented,
	"failed_precondition": http.StatusPreconditionFailed,
	"canceled":            499, // client closed the request
	"timeout":             http.StatusGatewayTimeout,
}

// statusOf maps kindling's error vocabulary to an HTTP status and kind.
// Function failures other than timeouts are 500s; back-pressure with a
// retry hint is 429.
func statusOf(err error) (int, string) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, "too_large"
	}
	kind := errdefs.KindOf(err)
	if kind == "unavailable" && errdefs.RetryAfter(err) > 0 {
		return http.StatusTooManyRequests, kind
	}
	if status, ok := statusByKind[kind]; ok {
		return status, kind
	}
	return http.StatusInternalServerError, kind
}

// writeError is the one place errors become HTTP responses.
func writeError(w http.ResponseWriter, err error) {
	status, kind := statusOf(err)
	writeErrorInfo(w, status, api.ErrorInfo{Kind: kind, Message: err.Error()}, errdefs.RetryAfter(err))
}

func writeErrorInfo(w http.ResponseWriter, status int, info api.ErrorInfo, retryAfter time.Duration) {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
	}
	writeJSON(w, status, api.ErrorBody{Error: info})
}

func (s *Server) uploadArtifact(w http.ResponseWriter, r *http.Request) {
	ref, err := s.cfg.Functions.Store().PutArtifact(r.Body, s.cfg.MaxArtifactBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, ref)
}

// importImage serves POST /v1/images?name=NAME:TAG: the body is an image
// tarball, spooled to a temporary file and imported.
func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Images == nil {
		writeError(w, fmt.Errorf("no image sandbox on this host (runc or crun missing, or not root): %w", errdefs.ErrNotImplemented))
		return
	}
	tmp, err := os.CreateTemp("", "kindling-image-*.tar")
	if err != nil {
		writeError(w, fmt.Errorf("spool image: %w", err))
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, http.MaxBytesReader(w, r.Body, s.cfg.MaxArtifactBytes*8)); err != nil {
		writeError(w, fmt.Errorf("image upload: %w", err))
		return
	}
	ref, err := s.cfg.Images.ImportFile(r.Context(), tmp.Name(), r.URL.Query()["name"]...)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, ref)
}

func (s *Server) listFunctions(w http.ResponseWriter, r *http.Request) {
	fns := s.cfg.Functions.List()
	if fns == nil {
		fns = []api.Function{}
	}
	writeJSON(w, http.StatusOK, api.FunctionList{Functions: fns})
}

func (s *Server) getFunction(w http.ResponseWriter, r *http.Request) {
	f, err := s.cfg.Functions.Get(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}

func (s *Server) putFunction(w http.ResponseWriter, r *http.Request) {
	var spec api.FunctionSpec
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		writeError(w, fmt.Errorf("request body: %v: %w", err, errdefs.ErrInvalidArgument))
		return
	}
	name := r.PathValue("name")
	_, lookupErr := s.cfg.Functions.Get(name)
	f, err := s.cfg.Functions.Deploy(r.Context(), name, spec)
	if err != nil {
		writeError(w, err)
		return
	}
	status := http.StatusCreated
	if lookupErr == nil { // replaced an existing function
		status = http.StatusOK
	}
	writeJSON(w, status, f)
}

func (s *Server) deleteFunction(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Functions.Delete(r.Context(), r.PathValue("name")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getInvocation(w http.ResponseWriter, r *http.Request) {
	inv, err := s.cfg.Functions.Invocation(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, inv)
}

func (s *Server) functionLogs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := s.cfg.Functions.Get(name); err != nil {
		writeError(w, err)
		return
	}
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := parseSince(v, time.Now())
		if err != nil {
			writeError(w, fmt.Errorf("since: %v: %w", err, errdefs.ErrInvalidArgument))
			return
		}
		since = t
	}
	tailN := 0
	if v := r.URL.Query().Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, fmt.Errorf("tail: %q is not a non-negative number: %w", v, errdefs.ErrInvalidArgument))
			return
		}
		tailN = n
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.cfg.Logs == nil {
		return
	}
	var err error
	if follow(r) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		err = s.cfg.Logs.Follow(r.Context(), name, since, w, flusher(w))
	} else {
		err = s.cfg.Logs.Read(name, since, tailN, w)
	}
	if err != nil {
		s.cfg.Logger.Warn("read logs", "function", name, "err", err)
	}
}

func follow(r *http.Request) bool {
	v, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
	return v
}

func flusher(w http.ResponseWriter) func() {
	rc := http.NewResponseController(w)
	return func() { _ = rc.Flush() }
}

// invocationLogs serves GET /v1/invocations/{id}/logs: the output of a
// running invocation as it is written (with follow=true, until it ends), or
// the logged stderr of a finished one.
func (s *Server) invocationLogs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.cfg.Functions.Invocation(id); err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	ctx := r.Context()
	if !follow(r) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		cancel() // write what there is, do not wait for more
	}
	if _, err := s.cfg.Functions.FollowInvocation(ctx, id, w, flusher(w)); err != nil && ctx.Err() == nil {
		s.cfg.Logger.Warn("invocation logs", "id", id, "err", err)
	}
}

// wantsAsync reports whether the caller asked for an asynchronous
// invocation: "Prefer: respond-async" (RFC 7240) or ?async=true.
func wantsAsync(r *http.Request) bool {
	for _, p := range r.Header.Values("Prefer") {
		for _, v := range strings.Split(p, ",") {
			if strings.EqualFold(strings.TrimSpace(v), "respond-async") {
				return true
			}
		}
	}
	v, _ := strconv.ParseBool(r.URL.Query().Get("async"))
	return v
}

// parseSince accepts an RFC 3339 time or a duration before now ("10m").
func parseSince(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		return now.Add(-d), nil
	}
	return time.Parse(time.RFC3339Nano, v)
}

// invoke serves POST /v1/functions/{name}/invoke.
func (s *Server) invoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.serveInvocation(w, r, name, wagi.Request{
		Method: r.Method, Path: "/", Query: r.URL.RawQuery, Header: r.Header,
		RemoteAddr: r.RemoteAddr, Host: r.Host, ScriptName: "/v1/functions/" + name + "/invoke",
	})
}

// trigger serves ANY /fn/{name}/{path...}: the HTTP trigger.
func (s *Server) trigger(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.serveInvocation(w, r, name, wagi.Request{
		Method: r.Method, Path: "/" + r.PathValue("path"), Query: r.URL.RawQuery, Header: r.Header,
		RemoteAddr: r.RemoteAddr, Host: r.Host, ScriptName: "/fn/" + name,
	})
}

func (s *Server) serveInvocation(w http.ResponseWriter, r *http.Request, name string, wr wagi.Request) {
	body, err := readBody(w, r, s.cfg.MaxBodyBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	wr.ContentLen = int64(len(body))
	if wantsAsync(r) {
		inv, err := s.cfg.Functions.InvokeAsync(r.Context(), name, function.Request{Body: body, Env: wagi.Env(wr)})
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Location", "/v1/invocations/"+inv.ID)
		w.Header().Set(api.HeaderInvocationID, inv.ID)
		w.Header().Set("Preference-Applied", "respond-async")
		writeJSON(w, http.StatusAccepted, inv)
		return
	}
	ctx := s.cfg.Tracer.Extract(r.Context(), r.Header)
	res, err := s.cfg.Functions.Invoke(ctx, name, function.Request{Body: body, Env: wagi.Env(wr)})
	if err != nil {
		writeError(w, err)
		return
	}
	inv := res.Invocation
	h := w.Header()
	h.Set(api.HeaderInvocationID, inv.ID)
	h.Set(api.HeaderColdStart, strconv.FormatBool(inv.Cold))
	h.Set(api.HeaderServerTiming, phase.ServerTiming(inv.Phases))
	if res.Err != nil {
		status, kind := statusOf(res.Err)
		info := *inv.Error
		info.Kind, info.InvocationID, info.StderrTail = kind, inv.ID, inv.StderrTail
		writeErrorInfo(w, status, info, 0)
		return
	}
	out, err := wagi.ParseOutput(res.Stdout)
	if err != nil {
		writeErrorInfo(w, http.StatusBadGateway, api.ErrorInfo{Kind: "invalid_response", Message: err.Error(), InvocationID: inv.ID}, 0)
		return
	}
	for k, vs := range out.Header {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/octet-stream")
	}
	h.Set("Content-Length", strconv.Itoa(len(out.Body)))
	w.WriteHeader(out.Status)
	if r.Method != http.MethodHead {
		w.Write(out.Body)
	}
}

// readBody reads the whole request body, at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("request body of %d bytes exceeds the limit of %d: %w", r.ContentLength, limit, errdefs.ErrTooLarge)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("request body exceeds the limit of %d bytes: %w", limit, errdefs.ErrTooLarge)
		}
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return b, nil
}
