package launch

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestGroupID(t *testing.T) {
	if g := groupID("c1", map[string]string{AnnotationSandboxID: "pod"}); g != "pod" {
		t.Errorf("a pod's container: group %q, want the pod", g)
	}
	if g := groupID("c1", nil); g != "c1" {
		t.Errorf("a lone container: group %q, want itself", g)
	}
}

func TestReadAnnotations(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.json")
	if err := os.WriteFile(p, []byte(`{"ociVersion":"1.0.2","process":{"args":["x"]},"annotations":{"`+AnnotationSandboxID+`":"abc"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := readAnnotations(p)
	if err != nil || a[AnnotationSandboxID] != "abc" {
		t.Fatalf("%v, %v", a, err)
	}
	if err := os.WriteFile(p, []byte(`{`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readAnnotations(p); err == nil {
		t.Fatal("a broken spec parsed")
	}
}

func TestServerPath(t *testing.T) {
	t.Setenv(EnvServer, "")
	p, err := ServerPath()
	if err != nil || filepath.Base(p) != ServerBinaryName {
		t.Fatalf("%q, %v", p, err)
	}
	t.Setenv(EnvServer, "/opt/x/server")
	if p, _ := ServerPath(); p != "/opt/x/server" {
		t.Fatalf("override ignored: %q", p)
	}
}

// TestLean: containerd execs the start binary for every container, so it
// must not grow the wasm engine, gRPC or the server package.
func TestLean(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not found")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/kindling-dev/kindling/cmd/containerd-shim-kindling-v1").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	heavy := func(pkg string) bool {
		switch {
		case pkg == "google.golang.org/grpc", // the client and its transports
			pkg == "github.com/kindling-dev/kindling/shim",
			strings.HasPrefix(pkg, "github.com/tetratelabs/wazero"),
			strings.HasPrefix(pkg, "github.com/kindling-dev/kindling/sandbox"):
			return true
		}
		return false
	}
	for _, pkg := range strings.Fields(string(out)) {
		if heavy(pkg) {
			t.Errorf("the start binary links %s", pkg)
		}
	}
}
