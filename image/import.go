package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kindling-dev/kindling/errdefs"
)

// Annotations naming an image in an OCI image layout's index.
const (
	annotationRefName        = "org.opencontainers.image.ref.name"
	annotationContainerdName = "io.containerd.image.name"
)

// ImportFile imports the image tarball at path; see ImportBytes.
func (s *Store) ImportFile(ctx context.Context, path string, names ...string) (*Image, error) {
	open := func() (io.ReadCloser, error) { return os.Open(path) }
	img, err := s.importTarball(ctx, open, names)
	if err != nil {
		return nil, fmt.Errorf("image: import %s: %w", path, err)
	}
	return img, nil
}

// ImportBytes imports an image tarball held in memory: a docker-archive
// or a tar of an OCI image layout, optionally gzip-compressed. Layers not
// yet in the store are unpacked, each layer's content is checked against
// its diff ID, and the names the tarball records (docker RepoTags, OCI
// ref-name annotations) plus names (names or "sha256:" aliases) are made to
// resolve to the image. A tarball that is not a valid image is an error
// wrapping errdefs.ErrInvalidArgument.
func (s *Store) ImportBytes(ctx context.Context, b []byte, names ...string) (*Image, error) {
	open := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	img, err := s.importTarball(ctx, open, names)
	if err != nil {
		return nil, fmt.Errorf("image: import: %w", err)
	}
	return img, nil
}

// invalid marks err as the tarball's fault.
func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}

func (s *Store) importTarball(ctx context.Context, open tarball.Opener, names []string) (*Image, error) {
	refs := make([]string, 0, len(names))
	for _, n := range names {
		r, err := NormalizeRef(n)
		if err != nil {
			return nil, err
		}
		refs = append(refs, r)
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.root, "tmp"), "import-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	open, err = gunzipped(open, tmp)
	if err != nil {
		return nil, err
	}
	format, err := sniff(open)
	if err != nil {
		return nil, err
	}
	var (
		img  v1.Image
		tags []string
	)
	switch format {
	case formatDocker:
		img, tags, err = readDockerArchive(open)
	case formatOCI:
		img, tags, err = readLayout(ctx, open, filepath.Join(tmp, "layout"))
	}
	if err != nil {
		return nil, err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, invalid("read image config: %v", err)
	}
	parsed, err := parseConfig(raw)
	if err != nil {
		return nil, err
	}
	if err := checkPlatform(parsed); err != nil {
		return nil, err
	}
	for _, diffID := range parsed.Layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := v1.NewHash(diffID)
		if err != nil {
			return nil, invalid("layer %s: %v", diffID, err)
		}
		unpacked, err := s.ensureLayer(ctx, diffID, func() (io.ReadCloser, error) {
			l, err := img.LayerByDiffID(h)
			if err != nil {
				return nil, invalid("layer %s: %v", diffID, err)
			}
			rc, err := l.Uncompressed()
			if err != nil {
				return nil, invalid("layer %s: %v", diffID, err)
			}
			return rc, nil
		})
		if err != nil {
			return nil, err
		}
		if unpacked {
			parsed.Unpacked++
		}
	}
	if err := writeFileAtomic(s.configPath(parsed.ID), raw, filepath.Join(s.root, "tmp")); err != nil {
		return nil, fmt.Errorf("store image config: %w", err)
	}
	for _, t := range tags {
		if r, err := NormalizeRef(t); err == nil {
			refs = append(refs, r)
		}
	}
	if err := s.setRefs(refs, parsed.ID); err != nil {
		return nil, err
	}
	return parsed, nil
}

// checkPlatform rejects images built for another machine.
func checkPlatform(img *Image) error {
	if img.OS != "" && img.OS != "linux" {
		return invalid("image is for OS %q, not linux", img.OS)
	}
	if img.Architecture != "" && img.Architecture != runtime.GOARCH {
		return invalid("image is for architecture %q, not %s", img.Architecture, runtime.GOARCH)
	}
	return nil
}

// gunzipped returns an opener of the decompressed tarball when open's
// content is gzip-compressed (decompressing it once into dir), or open.
func gunzipped(open tarball.Opener, dir string) (tarball.Opener, error) {
	rc, err := open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	br := bufio.NewReader(rc)
	magic, _ := br.Peek(2)
	if !bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		return open, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, invalid("gzip: %v", err)
	}
	name := filepath.Join(dir, "image.tar")
	f, err := os.Create(name)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(f, zr)
	if cerr := f.Close(); err == nil && cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, invalid("gzip: %v", err)
	}
	return func() (io.ReadCloser, error) { return os.Open(name) }, nil
}

type format int

const (
	formatDocker format = iota + 1
	formatOCI
)

// sniff tells a docker-archive (manifest.json) from an OCI image layout
// (oci-layout and index.json) by the tarball's entries.
func sniff(open tarball.Opener) (format, error) {
	rc, err := open()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	seen := map[string]bool{}
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return 0, invalid("not an image tarball: empty")
			}
			break
		}
		if err != nil {
			return 0, invalid("not an image tarball: %v", err)
		}
		seen[path.Clean(hdr.Name)] = true
	}
	switch {
	case seen["manifest.json"]:
		return formatDocker, nil
	case seen["oci-layout"] && seen["index.json"]:
		return formatOCI, nil
	}
	return 0, invalid("not an image tarball: neither a docker-archive (manifest.json) nor an OCI image layout (oci-layout, index.json)")
}

// readDockerArchive opens the one image of a docker-archive.
func readDockerArchive(open tarball.Opener) (v1.Image, []string, error) {
	m, err := tarball.LoadManifest(open)
	if err != nil {
		return nil, nil, invalid("docker-archive manifest.json: %v", err)
	}
	if len(m) != 1 {
		return nil, nil, invalid("docker-archive holds %d images; import one at a time", len(m))
	}
	img, err := tarball.Image(open, nil)
	if err != nil {
		return nil, nil, invalid("docker-archive: %v", err)
	}
	return img, m[0].RepoTags, nil
}

// readLayout extracts an OCI image layout tarball into dir and opens the
// image in it for this platform.
func readLayout(ctx context.Context, open tarball.Opener, dir string) (v1.Image, []string, error) {
	if err := extractLayout(ctx, open, dir); err != nil {
		return nil, nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, nil, invalid("OCI layout: %v", err)
	}
	img, desc, err := findImage(idx, 0)
	if err != nil {
		return nil, nil, err
	}
	var names []string
	if n := desc.Annotations[annotationContainerdName]; n != "" {
		names = append(names, n)
	}
	if n := desc.Annotations[annotationRefName]; strings.ContainsAny(n, ":/") {
		names = append(names, n)
	}
	return img, names, nil
}

// findImage returns the first image of idx (searching nested indexes) for
// linux on this architecture, or without a platform.
func findImage(idx v1.ImageIndex, depth int) (v1.Image, v1.Descriptor, error) {
	if depth > 4 {
		return nil, v1.Descriptor{}, invalid("OCI layout: image indexes nested too deeply")
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, v1.Descriptor{}, invalid("OCI layout index: %v", err)
	}
	for _, d := range im.Manifests {
		if p := d.Platform; p != nil && (p.OS != "linux" || p.Architecture != runtime.GOARCH) {
			continue
		}
		switch {
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, v1.Descriptor{}, invalid("OCI layout image %s: %v", d.Digest, err)
			}
			return img, d, nil
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, v1.Descriptor{}, invalid("OCI layout index %s: %v", d.Digest, err)
			}
			img, cd, err := findImage(child, depth+1)
			if err == nil {
				if cd.Annotations == nil {
					cd.Annotations = d.Annotations
				}
				return img, cd, nil
			}
		}
	}
	return nil, v1.Descriptor{}, invalid("OCI layout holds no image for linux/%s", runtime.GOARCH)
}

// extractLayout writes the layout's files (oci-layout, index.json and
// blobs) into dir, never outside it.
func extractLayout(ctx context.Context, open tarball.Opener, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return invalid("OCI layout tarball: %v", err)
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "/"))
		if hdr.Typeflag != tar.TypeReg || !(name == "oci-layout" || name == "index.json" || strings.HasPrefix(name, "blobs/")) {
			continue
		}
		if !fs.ValidPath(name) {
			return invalid("OCI layout tarball: bad path %q", hdr.Name)
		}
		if err := root.MkdirAll(path.Dir(name), 0o700); err != nil {
			return err
		}
		f, err := root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, sourceReader{tr})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

// ensureLayer unpacks the layer with the given diff ID into the store
// unless it is already there, and reports whether it did. Concurrent calls
// for the same layer unpack it once.
func (s *Store) ensureLayer(ctx context.Context, diffID string, open func() (io.ReadCloser, error)) (bool, error) {
	dir := s.LayerDir(diffID)
	key := filepath.Base(dir)
	for {
		if _, err := os.Stat(dir); err == nil {
			return false, nil
		}
		s.unpackMu.Lock()
		if u, ok := s.unpack[key]; ok {
			s.unpackMu.Unlock()
			select {
			case <-u.done:
			case <-ctx.Done():
				return false, ctx.Err()
			}
			if u.err == nil {
				return false, nil
			}
			continue // its tarball may have been bad; try ours
		}
		u := &unpacking{done: make(chan struct{})}
		s.unpack[key] = u
		s.unpackMu.Unlock()

		u.err = s.unpackLayer(ctx, diffID, dir, open)
		s.unpackMu.Lock()
		delete(s.unpack, key)
		s.unpackMu.Unlock()
		close(u.done)
		return u.err == nil, u.err
	}
}

func (s *Store) unpackLayer(ctx context.Context, diffID, dir string, open func() (io.ReadCloser, error)) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.root, "tmp"), "layer-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	src := io.TeeReader(rc, h)
	if err := applyLayer(ctx, tmp, src); err != nil {
		return fmt.Errorf("layer %s: %w", diffID, err)
	}
	if _, err := io.Copy(io.Discard, src); err != nil { // the tar's trailing padding
		return invalid("layer %s: %v", diffID, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return invalid("layer %s: content has digest %s", diffID, got)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(dir); serr == nil {
			return nil // unpacked meanwhile by another process
		}
		return fmt.Errorf("layer %s: %w", diffID, err)
	}
	return nil
}

// sourceReader marks read errors as the tarball's fault.
type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = invalid("read: %v", err)
	}
	return n, err
}
