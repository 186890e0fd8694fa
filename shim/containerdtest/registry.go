package containerdtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Registry is an in-memory OCI registry on localhost, which containerd
// pulls from over plain HTTP (it trusts localhost). It lets tests pull
// images the way a node does, unpacking included.
type Registry struct {
	// Host is "localhost:PORT".
	Host string
	srv  *httptest.Server
}

// StartRegistry starts a registry on a free localhost port.
func StartRegistry() (*Registry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("registry listen: %w", err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: registry.New(registry.Logger(nopLogger()))}}
	srv.Start()
	port := l.Addr().(*net.TCPAddr).Port
	return &Registry{Host: fmt.Sprintf("localhost:%d", port), srv: srv}, nil
}

// Close stops the registry.
func (r *Registry) Close() { r.srv.Close() }

// Push uploads img as repo:tag and returns its reference
// ("localhost:PORT/repo:tag").
func (r *Registry) Push(ctx context.Context, img Image, repo, tag string) (string, error) {
	blobs, manifest, err := img.blobs()
	if err != nil {
		return "", err
	}
	for _, b := range blobs {
		if err := r.pushBlob(ctx, repo, b); err != nil {
			return "", err
		}
	}
	u := fmt.Sprintf("%s/v2/%s/manifests/%s", r.srv.URL, repo, tag)
	if err := r.do(ctx, http.MethodPut, u, manifest.mediaType, manifest.data, http.StatusCreated); err != nil {
		return "", fmt.Errorf("push manifest %s:%s: %w", repo, tag, err)
	}
	return fmt.Sprintf("%s/%s:%s", r.Host, repo, tag), nil
}

func (r *Registry) pushBlob(ctx context.Context, repo string, b blob) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("%s/v2/%s/blobs/uploads/", r.srv.URL, repo), nil)
	if err != nil {
		return err
	}
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		return fmt.Errorf("start upload: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("start upload: %s", resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return err
	}
	target := r.srv.URL + loc.Path
	sep := "?"
	if loc.RawQuery != "" {
		target += "?" + loc.RawQuery
		sep = "&"
	}
	if err := r.do(ctx, http.MethodPut, target+sep+"digest="+url.QueryEscape(b.digest()), "application/octet-stream", b.data, http.StatusCreated); err != nil {
		return fmt.Errorf("upload %s: %w", b.digest(), err)
	}
	return nil
}

func (r *Registry) do(ctx context.Context, method, u, contentType string, body []byte, want int) error {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

func nopLogger() *log.Logger { return log.New(io.Discard, "", 0) }
