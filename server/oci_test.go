package server_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/daemon"
	"github.com/kindling-dev/kindling/internal/ocitest"
)

// A container image imported over the API deploys as an oci function and
// answers through the same invoke path and contract as wasm functions.
func TestOCIFunctionOverHTTP(t *testing.T) {
	ocitest.RequireRoot(t)
	ocitest.RequireRuntime(t, "runc")
	bins := ocitest.Build(t)
	d, err := daemon.New(context.Background(), daemon.Config{DataDir: t.TempDir(), AgentPath: bins.Agent})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Server)
	h := &harness{t: t, dir: "", d: d, srv: srv, c: newClient(srv.URL)}
	t.Cleanup(h.stop)
	ctx := context.Background()

	ref, err := h.c.ImportImage(ctx, bytes.NewReader(ocitest.FixtureImage(t, "echo")), "echo:v1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ref.ID, "sha256:") || !slices.Contains(ref.Names, "echo:v1") {
		t.Fatalf("imported %+v", ref)
	}
	f, err := h.c.Deploy(ctx, "echo-oci", api.FunctionSpec{Runtime: "oci", Image: "echo:v1", MemoryMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	if f.Artifact != ref.ID {
		t.Fatalf("deployed artifact %s, want the image id %s", f.Artifact, ref.ID)
	}
	for i, want := range []bool{true, false} { // a cold start, then the warm container
		res, err := h.c.Invoke(ctx, "echo-oci", strings.NewReader("through a container"))
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Body) != "through a container" || res.Cold != want {
			t.Fatalf("invoke %d: %q cold=%v", i, res.Body, res.Cold)
		}
	}
	// Deploy errors name the field.
	for _, spec := range []api.FunctionSpec{
		{Runtime: "oci"},
		{Runtime: "oci", Image: "missing:tag"},
		{Runtime: "wasm", Image: "echo:v1"},
	} {
		_, err := h.c.Deploy(ctx, "bad", spec)
		if ce := apiError(t, err); ce.Status != 400 || !strings.Contains(ce.Info.Message, "image") {
			t.Errorf("%+v: %d %s", spec, ce.Status, ce.Info.Message)
		}
	}
	if _, err := h.c.ImportImage(ctx, strings.NewReader("not a tarball")); apiError(t, err).Status != 400 {
		t.Errorf("corrupt tarball: %v", err)
	}
}
