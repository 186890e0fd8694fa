package shim

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kindling-dev/kindling/internal/testmodules"
)

func TestMemoryMB(t *testing.T) {
	limit := func(n int64) *specs.LinuxResources {
		return &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &n}}
	}
	tests := []struct {
		name string
		res  *specs.LinuxResources
		want int
	}{
		{"no resources", nil, DefaultMemoryMB},
		{"no memory", &specs.LinuxResources{}, DefaultMemoryMB},
		{"unlimited", limit(-1), DefaultMemoryMB},
		{"exact", limit(64 << 20), 64},
		{"rounded up", limit(64<<20 + 1), 65},
		{"tiny", limit(1), 1},
		{"above wasm32", limit(16 << 30), DefaultMemoryMB},
	}
	for _, tt := range tests {
		if got := memoryMB(tt.res); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}

func rootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"app/hello.wasm":     testmodules.Hello,
		"usr/bin/tool.wasm":  testmodules.Echo,
		"app/native":         []byte("\x7fELF"),
		"outside/secret.txt": []byte("secret"),
	} {
		p := filepath.Join(dir, "root", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A module outside the rootfs, reachable only by escaping it.
	if err := os.WriteFile(filepath.Join(dir, "escape.wasm"), testmodules.Hello, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../escape.wasm", filepath.Join(dir, "root", "app", "link.wasm")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/app/hello.wasm", filepath.Join(dir, "root", "usr", "bin", "abs.wasm")); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "root")
}

func TestFindModule(t *testing.T) {
	root, err := os.OpenRoot(rootfs(t))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	path := []string{"PATH=/usr/local/bin:/usr/bin"}
	tests := []struct {
		arg0, cwd string
		env       []string
		want      string
		err       error
	}{
		{"/app/hello.wasm", "/", nil, "/app/hello.wasm", nil},
		{"hello.wasm", "/app", path, "/app/hello.wasm", nil},
		{"./hello.wasm", "/app", nil, "/app/hello.wasm", nil},
		{"../app/hello.wasm", "/usr", nil, "/app/hello.wasm", nil},
		{"tool.wasm", "/", path, "/usr/bin/tool.wasm", nil},
		{"bin/tool.wasm", "/usr", nil, "/usr/bin/tool.wasm", nil},
		{"/../../app/hello.wasm", "/", nil, "/app/hello.wasm", nil}, // ".." stops at the root
		{"/app/native", "/", nil, "", errdefs.ErrInvalidArgument},
		{"/app/missing.wasm", "/", nil, "", errdefs.ErrNotFound},
		{"/app", "/", nil, "", errdefs.ErrNotFound},
		{"tool.wasm", "/", nil, "", errdefs.ErrNotFound}, // no PATH
	}
	for _, tt := range tests {
		got, bin, err := findModule(root, tt.arg0, tt.cwd, tt.env)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("%s in %s: %v, want %v", tt.arg0, tt.cwd, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want || len(bin) == 0 {
			t.Errorf("%s in %s: %q (%d bytes), %v; want %q", tt.arg0, tt.cwd, got, len(bin), err, tt.want)
		}
	}
	// Symlinks cannot lead out of the rootfs: "../../escape.wasm" stops at
	// its root; absolute ones resolve in it.
	if _, _, err := findModule(root, "/app/link.wasm", "/", nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a symlink escaping the rootfs: %v, want not found", err)
	}
	if p, _, err := findModule(root, "/usr/bin/abs.wasm", "/", nil); err != nil {
		t.Errorf("absolute symlink inside the rootfs: %q, %v", p, err)
	}
}

func TestResolveProgram(t *testing.T) {
	dir := rootfs(t)
	data := t.TempDir()
	file := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm"},
		{Destination: "/data", Type: "bind", Source: data, Options: []string{"rbind", "ro"}},
		{Destination: "/scratch/", Source: data, Options: []string{"rbind", "rw"}},
		{Destination: "/etc/hosts", Type: "bind", Source: file, Options: []string{"rbind"}},
		{Destination: "relative", Type: "bind", Source: data},
	}
	proc := &specs.Process{Args: []string{"hello.wasm", "a", "b"}, Cwd: "/app", Env: []string{"K=V"}}
	p, err := resolveProgram(dir, true, proc, mounts, 32)
	if err != nil {
		t.Fatal(err)
	}
	s := p.spec
	if p.path != "/app/hello.wasm" || s.Name != "hello.wasm" || len(s.Args) != 2 || s.Args[1] != "b" || s.MemoryMB != 32 {
		t.Fatalf("program %+v", p)
	}
	if len(s.Env) != 2 || s.Env[1] != "PWD=/app" {
		t.Errorf("env %v, want K=V and PWD=/app", s.Env)
	}
	want := []struct {
		guest string
		ro    bool
	}{{"/", true}, {"/data", true}, {"/scratch", false}}
	if len(s.Mounts) != len(want) {
		t.Fatalf("preopens %+v", s.Mounts)
	}
	for i, w := range want {
		if s.Mounts[i].GuestPath != w.guest || s.Mounts[i].ReadOnly != w.ro {
			t.Errorf("preopen %d: %+v, want %s ro=%v", i, s.Mounts[i], w.guest, w.ro)
		}
	}
	if b, err := s.Load(); err != nil || len(b) != len(testmodules.Hello) || s.Artifact == "" {
		t.Errorf("load: %d bytes, %v, artifact %q", len(b), err, s.Artifact)
	}
}

// FuzzFindModule: whatever a spec names, the module read is one of the
// rootfs's own files, and nothing panics.
func FuzzFindModule(f *testing.F) {
	for _, seed := range [][2]string{{"/app/hello.wasm", "/"}, {"hello.wasm", "/app"}, {"../../../escape.wasm", "/app"}, {"/app/link.wasm", "/"}, {"", ""}, {"tool.wasm", "/usr"}} {
		f.Add(seed[0], seed[1], "/usr/bin:/app")
	}
	dir := fuzzRootfs(f)
	root, err := os.OpenRoot(dir)
	if err != nil {
		f.Fatal(err)
	}
	defer root.Close()
	f.Fuzz(func(t *testing.T, arg0, cwd, pathEnv string) {
		p, bin, err := findModule(root, arg0, cwd, []string{"PATH=" + pathEnv})
		if err != nil {
			return
		}
		inside, rerr := os.ReadFile(filepath.Join(dir, p))
		if rerr != nil {
			// Resolved through an in-root absolute symlink: compare with
			// what the root itself reads.
			inside, rerr = root.ReadFile(p[1:])
		}
		if rerr != nil || string(inside) != string(bin) {
			t.Fatalf("%q in %q resolved to %q, which is not the rootfs's file (%v)", arg0, cwd, p, rerr)
		}
	})
}

// fuzzRootfs builds a rootfs with two modules, and a third outside it
// behind a symlink.
func fuzzRootfs(f *testing.F) string {
	f.Helper()
	dir := f.TempDir()
	files := map[string][]byte{"app/hello.wasm": testmodules.Hello, "usr/bin/tool.wasm": testmodules.Echo}
	for name, data := range files {
		p := filepath.Join(dir, "root", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "escape.wasm"), testmodules.Loop, 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.Symlink("../../escape.wasm", filepath.Join(dir, "root", "app", "link.wasm")); err != nil {
		f.Fatal(err)
	}
	return filepath.Join(dir, "root")
}
