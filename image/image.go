// Package image is kindling's registry-free store of container images.
//
// Images arrive as tarballs — a docker-archive (`docker save`) or an OCI
// image layout packed in a tar, optionally gzip-compressed — and are read
// with go-containerregistry. Each layer is unpacked exactly once into a
// content-addressed directory, <root>/layers/sha256/<diffID hex>/, in the
// form overlayfs expects of a lower directory: a deleted file (an OCI
// whiteout ".wh.NAME") becomes a 0:0 character device and an opaque
// directory (".wh..wh..opq") gets the trusted.overlay.opaque xattr. Images
// that share layers share their directories.
//
// An image is identified by the digest of its config blob ("sha256:…",
// what docker calls the image ID): it does not change with compression or
// tarball format. The config blob itself is kept as
// <root>/images/sha256/<hex>; names ("hello:latest") and aliases (the
// digest of the tarball an image came from) map to it in <root>/refs.json.
//
// Build writes such tarballs from files, so tests and benchmarks make their
// own images without a registry or network.
//
// A Store is safe for concurrent use by one process; one process at a time
// owns a store's directory.
package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kindling-dev/kindling/errdefs"
)

// Image is an image in the store.
type Image struct {
	// ID is the digest of the image's config blob, "sha256:<hex>".
	ID string
	// Layers are the diff IDs (digests of the uncompressed layer tars) of
	// the image's layers, base layer first.
	Layers []string
	// Config is what the image says about how to run it.
	Config Config
	// OS and Architecture are the image's platform ("linux", "amd64").
	OS, Architecture string
	// Unpacked is how many layers the Import that returned this Image had
	// to unpack (the others were already in the store). It is 0 for an
	// Image returned by Resolve.
	Unpacked int
}

// Config is the part of an image's config that says how to run it.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Command returns the process an image runs: its entrypoint followed by
// args, or by its default Cmd when args is empty (docker's rule). An image
// with neither an entrypoint nor a command, and no args, cannot run: the
// error wraps errdefs.ErrInvalidArgument.
func (img *Image) Command(args []string) ([]string, error) {
	if len(args) == 0 {
		args = img.Config.Cmd
	}
	argv := append(append([]string(nil), img.Config.Entrypoint...), args...)
	if len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("image %s has no entrypoint and no command, and none was given: %w", img.ID, errdefs.ErrInvalidArgument)
	}
	return argv, nil
}

// Store is a content-addressed image store rooted at a directory.
type Store struct {
	root string

	mu   sync.Mutex
	refs map[string]string // name or alias -> image ID

	unpackMu sync.Mutex
	unpack   map[string]*unpacking // diffID hex -> unpack in progress
}

type unpacking struct {
	done chan struct{}
	err  error
}

const refsFile = "refs.json"

// Open opens (creating if needed) the store rooted at root. Leftovers of
// an interrupted import are removed.
func Open(root string) (*Store, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("image: open store: %w", err)
	}
	for _, dir := range []string{"layers/sha256", "images/sha256", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o700); err != nil {
			return nil, fmt.Errorf("image: open store: %w", err)
		}
	}
	if err := clearDir(filepath.Join(root, "tmp")); err != nil {
		return nil, fmt.Errorf("image: open store: clear tmp: %w", err)
	}
	s := &Store{root: root, refs: map[string]string{}, unpack: map[string]*unpacking{}}
	b, err := os.ReadFile(filepath.Join(root, refsFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("image: open store: %w", err)
	default:
		if err := json.Unmarshal(b, &s.refs); err != nil {
			return nil, fmt.Errorf("image: open store: %s: %w", refsFile, err)
		}
	}
	return s, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

// LayerDir returns the directory holding the unpacked layer with the given
// diff ID ("sha256:<hex>").
func (s *Store) LayerDir(diffID string) string {
	return filepath.Join(s.root, "layers", "sha256", strings.TrimPrefix(diffID, "sha256:"))
}

// LayerDirs returns the directories of img's layers, base layer first.
func (s *Store) LayerDirs(img *Image) []string {
	dirs := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		dirs[i] = s.LayerDir(l)
	}
	return dirs
}

var (
	hexDigest     = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	tagPattern    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	domainPattern = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9]+)?$`)
	pathPattern   = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$`)
)

// NormalizeRef returns ref with the tag "latest" added when it has none,
// or an error wrapping errdefs.ErrInvalidArgument if it is neither a valid
// "[host[:port]/]name[:tag]" nor a "sha256:<hex>" digest.
func NormalizeRef(ref string) (string, error) {
	if strings.HasPrefix(ref, "sha256:") {
		if !hexDigest.MatchString(ref) {
			return "", fmt.Errorf("image: malformed digest %q: %w", ref, errdefs.ErrInvalidArgument)
		}
		return ref, nil
	}
	name, tag := ref, "latest"
	if i := strings.LastIndexByte(ref, ':'); i >= 0 && !strings.Contains(ref[i:], "/") {
		name, tag = ref[:i], ref[i+1:]
	}
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("image: malformed reference %q (want [host/]name[:tag]): %s: %w", ref, why, errdefs.ErrInvalidArgument)
	}
	if !tagPattern.MatchString(tag) {
		return bad("bad tag")
	}
	if name == "" || len(name) > 255 {
		return bad("bad name length")
	}
	parts := strings.Split(name, "/")
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:") || parts[0] == "localhost") {
		if !domainPattern.MatchString(parts[0]) {
			return bad("bad host")
		}
		parts = parts[1:]
	}
	for _, p := range parts {
		if !pathPattern.MatchString(p) {
			return bad("bad name component " + strconv.Quote(p))
		}
	}
	return name + ":" + tag, nil
}

// Resolve returns the image a reference names: an image ID, a name[:tag]
// or an alias recorded at import. An unknown reference is an error wrapping
// errdefs.ErrNotFound.
func (s *Store) Resolve(ref string) (*Image, error) {
	norm, err := NormalizeRef(ref)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	id, ok := s.refs[norm]
	s.mu.Unlock()
	if !ok {
		if !strings.HasPrefix(norm, "sha256:") {
			return nil, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
		}
		id = norm
	}
	img, err := s.load(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	return img, err
}

// Names returns the names and aliases that resolve to the image id.
func (s *Store) Names(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for ref, target := range s.refs {
		if target == id {
			names = append(names, ref)
		}
	}
	slices.Sort(names)
	return names
}

// Tag makes ref (a name[:tag] or a "sha256:" alias) resolve to the image id.
func (s *Store) Tag(ref, id string) error {
	norm, err := NormalizeRef(ref)
	if err != nil {
		return err
	}
	if _, err := s.load(id); err != nil {
		return fmt.Errorf("image: tag %s: %w", ref, err)
	}
	return s.setRefs([]string{norm}, id)
}

func (s *Store) setRefs(refs []string, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, r := range refs {
		if r != id && s.refs[r] != id {
			s.refs[r] = id
			changed = true
		}
	}
	if !changed {
		return nil
	}
	b, err := json.MarshalIndent(s.refs, "", "  ")
	if err != nil {
		return fmt.Errorf("image: save refs: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(s.root, refsFile), b, filepath.Join(s.root, "tmp")); err != nil {
		return fmt.Errorf("image: save refs: %w", err)
	}
	return nil
}

func (s *Store) configPath(id string) string {
	return filepath.Join(s.root, "images", "sha256", strings.TrimPrefix(id, "sha256:"))
}

// load reads an image's config blob and checks that its layers are present.
func (s *Store) load(id string) (*Image, error) {
	if !hexDigest.MatchString(id) {
		return nil, fmt.Errorf("image: malformed image ID %q: %w", id, errdefs.ErrInvalidArgument)
	}
	raw, err := os.ReadFile(s.configPath(id))
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", id, err)
	}
	img, err := parseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("image %s: stored config: %w", id, err)
	}
	for _, l := range img.Layers {
		if _, err := os.Stat(s.LayerDir(l)); err != nil {
			return nil, fmt.Errorf("image %s: layer %s missing from the store: %w", id, l, err)
		}
	}
	return img, nil
}

// parseConfig reads an image config blob.
func parseConfig(raw []byte) (*Image, error) {
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse image config: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	sum := sha256.Sum256(raw)
	img := &Image{
		ID:           "sha256:" + hex.EncodeToString(sum[:]),
		OS:           cf.OS,
		Architecture: cf.Architecture,
		Config: Config{
			Entrypoint: cf.Config.Entrypoint,
			Cmd:        cf.Config.Cmd,
			Env:        cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir,
			User:       cf.Config.User,
		},
	}
	if cf.RootFS.Type != "" && cf.RootFS.Type != "layers" {
		return nil, fmt.Errorf("image config: rootfs type %q, want \"layers\": %w", cf.RootFS.Type, errdefs.ErrInvalidArgument)
	}
	for _, d := range cf.RootFS.DiffIDs {
		if d.Algorithm != "sha256" || !hexDigest.MatchString(d.String()) {
			return nil, fmt.Errorf("image config: unsupported layer diff ID %q: %w", d, errdefs.ErrInvalidArgument)
		}
		img.Layers = append(img.Layers, d.String())
	}
	return img, nil
}

// writeFileAtomic writes b to path through a temporary file in tmpDir
// (on the same file system) and a rename.
func writeFileAtomic(path string, b []byte, tmpDir string) error {
	f, err := os.CreateTemp(tmpDir, filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// clearDir removes dir's contents.
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}
