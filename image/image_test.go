package image_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/image"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: unpacking layers creates device nodes, trusted xattrs and files of any owner")
	}
}

func openStore(t testing.TB) *image.Store {
	t.Helper()
	s, err := image.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func build(t testing.TB, spec image.BuildSpec) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := image.Build(&buf, spec); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var (
	baseLayer = image.Layer{
		{Path: "etc", Mode: fs.ModeDir},
		{Path: "etc/keep", Data: []byte("kept\n")},
		{Path: "etc/gone", Data: []byte("deleted above\n")},
		{Path: "data", Mode: fs.ModeDir | 0o750, UID: 1000, GID: 1000},
		{Path: "data/old", Data: []byte("hidden by an opaque dir\n")},
		{Path: "bin/app", Data: []byte("#!/bin/true\n"), Mode: 0o755},
		{Path: "bin/sticky", Data: []byte("x"), Mode: fs.ModeSetuid | 0o755},
		{Path: "link", Mode: fs.ModeSymlink, Target: "bin/app"},
	}
	topLayer = image.Layer{
		{Path: "etc/.wh.gone"},
		{Path: "data/.wh..wh..opq"},
		{Path: "data/new", Data: []byte("new\n")},
	}
	appConfig = image.Config{Entrypoint: []string{"/bin/app"}, Cmd: []string{"--flag"}, Env: []string{"PATH=/bin", "A=1"}, WorkingDir: "/data"}
)

func TestBuildImport_Formats(t *testing.T) {
	requireRoot(t)
	spec := image.BuildSpec{Ref: "test/app:v1", Config: appConfig, Layers: []image.Layer{baseLayer, topLayer}}
	docker := build(t, spec)
	spec.Format = image.OCILayout
	oci := build(t, spec)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(docker)
	zw.Close()

	var ids []string
	for _, tc := range []struct {
		name string
		tar  []byte
	}{{"docker-archive", docker}, {"oci-layout", oci}, {"docker-archive.gz", gz.Bytes()}} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			img, err := s.ImportBytes(context.Background(), tc.tar)
			if err != nil {
				t.Fatal(err)
			}
			if len(img.Layers) != 2 || img.Unpacked != 2 {
				t.Fatalf("layers %v, unpacked %d; want 2 and 2", img.Layers, img.Unpacked)
			}
			if !slices.Equal(img.Config.Entrypoint, appConfig.Entrypoint) || !slices.Equal(img.Config.Cmd, appConfig.Cmd) ||
				!slices.Equal(img.Config.Env, appConfig.Env) || img.Config.WorkingDir != "/data" {
				t.Errorf("config = %+v, want %+v", img.Config, appConfig)
			}
			got, err := s.Resolve("test/app:v1")
			if err != nil || got.ID != img.ID {
				t.Fatalf("Resolve(name) = %v, %v; want %s", got, err, img.ID)
			}
			if got, err := s.Resolve(img.ID); err != nil || got.ID != img.ID {
				t.Fatalf("Resolve(id) = %v, %v", got, err)
			}
			base := s.LayerDir(img.Layers[0])
			if b, err := os.ReadFile(filepath.Join(base, "etc/keep")); err != nil || string(b) != "kept\n" {
				t.Errorf("etc/keep = %q, %v", b, err)
			}
			if fi, err := os.Stat(filepath.Join(base, "bin/sticky")); err != nil || fi.Mode()&fs.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
				t.Errorf("bin/sticky mode = %v, %v; want setuid 0755", fi.Mode(), err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(base, "data"), &st); err != nil || st.Uid != 1000 || st.Mode&0o777 != 0o750 {
				t.Errorf("data: uid %d mode %o, %v", st.Uid, st.Mode&0o777, err)
			}
			if target, err := os.Readlink(filepath.Join(base, "link")); err != nil || target != "bin/app" {
				t.Errorf("link -> %q, %v", target, err)
			}
			ids = append(ids, img.ID)
		})
	}
	if len(ids) == 3 && (ids[0] != ids[1] || ids[1] != ids[2]) {
		t.Errorf("image IDs differ across formats: %v", ids)
	}
}

func TestLayerFromDir(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "usr/bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "usr/bin/tool"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("usr/bin", filepath.Join(dir, "bin"))
	layer, err := image.LayerFromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	img, err := s.ImportBytes(context.Background(), build(t, image.BuildSpec{Ref: "dir", Config: image.Config{Cmd: []string{"/bin/tool"}}, Layers: []image.Layer{layer}}))
	if err != nil {
		t.Fatal(err)
	}
	got := s.LayerDir(img.Layers[0])
	if fi, err := os.Stat(filepath.Join(got, "bin/tool")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/tool through the symlink: %v, %v", fi, err)
	}
	unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
	if _, err := image.LayerFromDir(dir); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a fifo: %v, want ErrInvalidArgument", err)
	}
}

func TestImport_Whiteouts(t *testing.T) {
	requireRoot(t)
	s := openStore(t)
	img, err := s.ImportBytes(context.Background(), build(t, image.BuildSpec{Ref: "wh", Config: appConfig, Layers: []image.Layer{baseLayer, topLayer}}))
	if err != nil {
		t.Fatal(err)
	}
	top := s.LayerDir(img.Layers[1])
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(top, "etc/gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("etc/gone in the top layer: mode %o rdev %d, %v; want a 0:0 character device", st.Mode, st.Rdev, err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(top, "data"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("data opaque xattr = %q, %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(top, ".wh..wh..opq")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("whiteout marker file left in the layer: %v", err)
	}

	// The proof: overlayfs over the two layers shows the merged image.
	dirs := s.LayerDirs(img)
	mnt := t.TempDir()
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+dirs[1]+":"+dirs[0]); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	for _, tc := range []struct {
		path string
		want bool
	}{{"etc/keep", true}, {"etc/gone", false}, {"data/new", true}, {"data/old", false}, {"bin/app", true}} {
		_, err := os.Lstat(filepath.Join(mnt, tc.path))
		if (err == nil) != tc.want {
			t.Errorf("%s exists = %v, want %v", tc.path, err == nil, tc.want)
		}
	}
}

func TestImport_LayersUnpackedOnce(t *testing.T) {
	requireRoot(t)
	s := openStore(t)
	ctx := context.Background()
	a, err := s.ImportBytes(ctx, build(t, image.BuildSpec{Ref: "a", Config: appConfig, Layers: []image.Layer{baseLayer}}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.ImportBytes(ctx, build(t, image.BuildSpec{Ref: "b", Config: appConfig, Layers: []image.Layer{baseLayer, topLayer}}), "sha256:"+strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	if a.Unpacked != 1 || b.Unpacked != 1 || a.Layers[0] != b.Layers[0] {
		t.Errorf("unpacked a=%d b=%d (shared base %v); want 1 and 1", a.Unpacked, b.Unpacked, a.Layers[0] == b.Layers[0])
	}
	again, err := s.ImportBytes(ctx, build(t, image.BuildSpec{Ref: "b", Config: appConfig, Layers: []image.Layer{baseLayer, topLayer}}))
	if err != nil || again.Unpacked != 0 || again.ID != b.ID {
		t.Errorf("re-import: unpacked %d, id %s (%v); want 0, %s", again.Unpacked, again.ID, err, b.ID)
	}
	entries, _ := os.ReadDir(filepath.Join(s.Root(), "layers", "sha256"))
	if len(entries) != 2 {
		t.Errorf("%d layer directories, want 2", len(entries))
	}
	// The alias and the names survive a reopen.
	s2, err := image.Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"a", "a:latest", "b:latest", "sha256:" + strings.Repeat("ab", 32)} {
		if _, err := s2.Resolve(ref); err != nil {
			t.Errorf("Resolve(%q) after reopen: %v", ref, err)
		}
	}
	if got := s2.Names(b.ID); !slices.Equal(got, []string{"b:latest", "sha256:" + strings.Repeat("ab", 32)}) {
		t.Errorf("Names = %v", got)
	}
}

func TestImport_Concurrent(t *testing.T) {
	requireRoot(t)
	s := openStore(t)
	tarball := build(t, image.BuildSpec{Ref: "c", Config: appConfig, Layers: []image.Layer{baseLayer, topLayer}})
	errs := make(chan error, 4)
	unpacked := make(chan int, 4)
	for range 4 {
		go func() {
			img, err := s.ImportBytes(context.Background(), tarball)
			if err == nil {
				unpacked <- img.Unpacked
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(unpacked)
	total := 0
	for n := range unpacked {
		total += n
	}
	if total != 2 {
		t.Errorf("layers unpacked %d times in all, want 2 (once each)", total)
	}
}

func TestImport_Errors(t *testing.T) {
	requireRoot(t)
	good := build(t, image.BuildSpec{Ref: "ok", Config: appConfig, Layers: []image.Layer{baseLayer}})
	uncompressedLayer := dockerArchiveWithRawLayer(t, []byte("not a tar, but long enough to be one block? no"))
	tests := []struct {
		name string
		tar  []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"garbage", []byte(strings.Repeat("garbage!", 200)), "not an image tarball"},
		{"plain tar", tarOf(t, map[string]string{"hello.txt": "hi"}), "neither a docker-archive"},
		{"truncated", good[:len(good)/2], ""},
		{"bad gzip", []byte{0x1f, 0x8b, 0, 0, 0}, "gzip"},
		{"layer not matching its diff ID", uncompressedLayer, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			_, err := s.ImportBytes(context.Background(), tc.tar)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ImportBytes = %v, want ErrInvalidArgument containing %q", err, tc.want)
			}
			if entries, _ := os.ReadDir(filepath.Join(s.Root(), "tmp")); len(entries) != 0 {
				t.Errorf("import left %d entries in tmp", len(entries))
			}
		})
	}
}

// dockerArchiveWithRawLayer writes a docker-archive whose config claims a
// diff ID its layer does not have.
func dockerArchiveWithRawLayer(t *testing.T, layer []byte) []byte {
	t.Helper()
	cfg := `{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/x"]},"rootfs":{"type":"layers","diff_ids":["sha256:` + strings.Repeat("0", 64) + `"]}}`
	manifest := `[{"Config":"config.json","RepoTags":["bad:latest"],"Layers":["layer.tar"]}]`
	return tarOf(t, map[string]string{"config.json": cfg, "manifest.json": manifest, "layer.tar": string(tarOf(t, map[string]string{"x": "y"}))})
}

func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg})
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	return buf.Bytes()
}

func TestImport_StaysInsideLayer(t *testing.T) {
	requireRoot(t)
	outside := t.TempDir()
	var lt bytes.Buffer
	tw := tar.NewWriter(&lt)
	tw.WriteHeader(&tar.Header{Name: "escape", Typeflag: tar.TypeSymlink, Linkname: outside, Mode: 0o777})
	tw.WriteHeader(&tar.Header{Name: "escape/pwned", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	tw.Close()
	s := openStore(t)
	_, err := s.ImportBytes(context.Background(), dockerArchiveWithLayer(t, lt.Bytes()))
	if err == nil {
		t.Error("a layer writing through a symlink to outside its directory was accepted")
	}
	if _, err := os.Stat(filepath.Join(outside, "pwned")); err == nil {
		t.Fatal("layer wrote outside its directory")
	}
}

// dockerArchiveWithLayer writes a docker-archive of one raw layer tar,
// with a correct diff ID.
func dockerArchiveWithLayer(t *testing.T, layer []byte) []byte {
	t.Helper()
	diffID := sha256Hex(layer)
	cfg := `{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/x"]},"rootfs":{"type":"layers","diff_ids":["sha256:` + diffID + `"]}}`
	manifest := `[{"Config":"config.json","RepoTags":["raw:latest"],"Layers":["layer.tar"]}]`
	return tarOf(t, map[string]string{"config.json": cfg, "manifest.json": manifest, "layer.tar": string(layer)})
}

func TestResolve_Errors(t *testing.T) {
	s := openStore(t)
	for _, ref := range []string{"missing", "missing:v2", "sha256:" + strings.Repeat("0", 64)} {
		if _, err := s.Resolve(ref); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Resolve(%q) = %v, want ErrNotFound", ref, err)
		}
	}
	for _, ref := range []string{"", "UPPER", "sha256:xyz", "a:b:c", "bad//name", "name:" + strings.Repeat("t", 200)} {
		if _, err := s.Resolve(ref); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Resolve(%q) = %v, want ErrInvalidArgument", ref, err)
		}
	}
}

func TestNormalizeRef(t *testing.T) {
	for in, want := range map[string]string{
		"hello":                        "hello:latest",
		"hello:v1":                     "hello:v1",
		"kindling/hello-world":         "kindling/hello-world:latest",
		"localhost:5000/x/y:1.0":       "localhost:5000/x/y:1.0",
		"registry.example.com/a_b/c.d": "registry.example.com/a_b/c.d:latest",
	} {
		if got, err := image.NormalizeRef(in); err != nil || got != want {
			t.Errorf("NormalizeRef(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestImage_Command(t *testing.T) {
	tests := []struct {
		cfg  image.Config
		args []string
		want []string
	}{
		{image.Config{Entrypoint: []string{"/e"}, Cmd: []string{"c"}}, nil, []string{"/e", "c"}},
		{image.Config{Entrypoint: []string{"/e"}, Cmd: []string{"c"}}, []string{"a"}, []string{"/e", "a"}},
		{image.Config{Cmd: []string{"/c", "x"}}, nil, []string{"/c", "x"}},
		{image.Config{}, []string{"/a"}, []string{"/a"}},
	}
	for _, tc := range tests {
		img := &image.Image{Config: tc.cfg}
		if got, err := img.Command(tc.args); err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Command(%v) with %+v = %v, %v; want %v", tc.args, tc.cfg, got, err, tc.want)
		}
	}
	if _, err := (&image.Image{ID: "sha256:x"}).Command(nil); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "no entrypoint and no command") {
		t.Errorf("Command on an image with nothing to run = %v", err)
	}
}

func FuzzImportBytes(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root")
	}
	small := image.Layer{{Path: "a", Data: []byte("x")}, {Path: "d/.wh.e"}}
	var buf bytes.Buffer
	image.Build(&buf, image.BuildSpec{Ref: "f", Config: appConfig, Layers: []image.Layer{small}})
	f.Add(buf.Bytes())
	buf.Reset()
	image.Build(&buf, image.BuildSpec{Ref: "f", Config: appConfig, Layers: []image.Layer{small}, Format: image.OCILayout})
	f.Add(buf.Bytes())
	s, err := image.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := s.ImportBytes(context.Background(), b)
		if err != nil {
			return
		}
		if _, err := s.Resolve(img.ID); err != nil {
			t.Fatalf("imported image %s does not resolve: %v", img.ID, err)
		}
	})
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
