package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kindling-dev/kindling/errdefs"
)

// Format is the format of an image tarball written by Build.
type Format int

// Tarball formats.
const (
	DockerArchive Format = iota // `docker save` format: manifest.json, config, layers
	OCILayout                   // an OCI image layout (oci-layout, index.json, blobs/) in a tar
)

// File is one entry of a layer built by Build.
type File struct {
	// Path is the entry's slash-separated path in the image, e.g. "bin/app".
	// A base name starting with ".wh." is an OCI whiteout.
	Path string
	// Mode is the entry's permissions and type (fs.ModeDir, fs.ModeSymlink;
	// regular otherwise). Zero means 0o644 for a file (the mode of Source
	// when set) and 0o755 for a directory.
	Mode fs.FileMode
	// Data is a regular file's content, or Source the host file to copy it from.
	Data   []byte
	Source string
	// Target is a symbolic link's target.
	Target string
	// UID and GID own the entry.
	UID, GID int
}

// Layer is the list of entries of one layer, written in this order.
type Layer []File

// BuildSpec describes an image for Build.
type BuildSpec struct {
	// Ref names the image in the tarball ("name[:tag]").
	Ref    string
	Config Config
	// Layers are applied base first.
	Layers []Layer
	Format Format
}

// buildTime is every entry's and the image's timestamp, so that building
// the same files twice makes the same image.
var buildTime = time.Unix(0, 0).UTC()

// Build writes an image tarball of spec's layers and config to w. The
// image is for linux on this machine's architecture, and the same spec
// always produces the same image ID. Layers are gzip streams of stored
// (uncompressed) blocks: a tarball made for a local store gains nothing from
// compression, and builds and imports faster without it. No registry or
// network is involved.
func Build(w io.Writer, spec BuildSpec) error {
	ref, err := NormalizeRef(spec.Ref)
	if err != nil {
		return err
	}
	img := empty.Image
	layerType := types.DockerLayer
	if spec.Format == OCILayout {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		layerType = types.OCILayer
	}
	for i, files := range spec.Layers {
		b, err := layerTar(files)
		if err != nil {
			return fmt.Errorf("image: build %s: layer %d: %w", ref, i, err)
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
			tarball.WithCompressionLevel(gzip.NoCompression), tarball.WithMediaType(layerType))
		if err != nil {
			return fmt.Errorf("image: build %s: layer %d: %w", ref, i, err)
		}
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: buildTime}, CreatedBy: "kindling image.Build"}}); err != nil {
			return fmt.Errorf("image: build %s: %w", ref, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image: build %s: %w", ref, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: buildTime}
	cf.Config.Entrypoint = spec.Config.Entrypoint
	cf.Config.Cmd = spec.Config.Cmd
	cf.Config.Env = spec.Config.Env
	cf.Config.WorkingDir = spec.Config.WorkingDir
	cf.Config.User = spec.Config.User
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("image: build %s: %w", ref, err)
	}
	switch spec.Format {
	case DockerArchive:
		tag, err := name.NewTag(ref, name.WeakValidation)
		if err != nil {
			return fmt.Errorf("image: build %s: %v: %w", ref, err, errdefs.ErrInvalidArgument)
		}
		if err := tarball.Write(tag, img, w); err != nil {
			return fmt.Errorf("image: build %s: %w", ref, err)
		}
	case OCILayout:
		if err := writeLayoutTar(w, ref, img); err != nil {
			return fmt.Errorf("image: build %s: %w", ref, err)
		}
	default:
		return fmt.Errorf("image: build %s: unknown format %d: %w", ref, spec.Format, errdefs.ErrInvalidArgument)
	}
	return nil
}

// BuildFile writes the image tarball of spec to path; see Build.
func BuildFile(path string, spec BuildSpec) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("image: build: %w", err)
	}
	if err := Build(f, spec); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LayerFromDir returns a layer holding the tree under dir (not dir
// itself): directories, regular files (read when the image is built) and
// symbolic links, owned by root in the image, with their permissions.
func LayerFromDir(dir string) (Layer, error) {
	var layer Layer
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		f := File{Path: filepath.ToSlash(rel), Mode: fi.Mode() & (fs.ModeType | fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)}
		switch {
		case fi.Mode().IsRegular():
			f.Source = p
		case fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			if f.Target, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unsupported file type %v: %w", p, fi.Mode().Type(), errdefs.ErrInvalidArgument)
		}
		layer = append(layer, f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("image: layer from %s: %w", dir, err)
	}
	return layer, nil
}

// layerTar writes a layer's entries as an uncompressed tar.
func layerTar(files Layer) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		p := strings.TrimPrefix(path.Clean("/"+f.Path), "/")
		if p == "" || !fs.ValidPath(p) {
			return nil, fmt.Errorf("bad path %q: %w", f.Path, errdefs.ErrInvalidArgument)
		}
		hdr := &tar.Header{Name: p, Uid: f.UID, Gid: f.GID, ModTime: buildTime, Format: tar.FormatPAX}
		mode := f.Mode
		data := f.Data
		switch {
		case mode&fs.ModeDir != 0:
			hdr.Typeflag, hdr.Name = tar.TypeDir, p+"/"
			if mode.Perm() == 0 {
				mode |= 0o755
			}
		case mode&fs.ModeSymlink != 0:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, f.Target
			mode |= 0o777
		default:
			hdr.Typeflag = tar.TypeReg
			if f.Source != "" {
				b, err := os.ReadFile(f.Source)
				if err != nil {
					return nil, err
				}
				data = b
				if mode == 0 {
					fi, err := os.Stat(f.Source)
					if err != nil {
						return nil, err
					}
					mode = fi.Mode().Perm()
				}
			}
			if mode.Perm() == 0 {
				mode |= 0o644
			}
			hdr.Size = int64(len(data))
		}
		hdr.Mode = int64(mode.Perm())
		if mode&fs.ModeSetuid != 0 {
			hdr.Mode |= 0o4000
		}
		if mode&fs.ModeSetgid != 0 {
			hdr.Mode |= 0o2000
		}
		if mode&fs.ModeSticky != 0 {
			hdr.Mode |= 0o1000
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeLayoutTar writes img as an OCI image layout and tars the layout.
func writeLayoutTar(w io.Writer, ref string, img v1.Image) error {
	dir, err := os.MkdirTemp("", "kindling-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	tag := ref[strings.LastIndexByte(ref, ':')+1:]
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		annotationRefName:        tag,
		annotationContainerdName: ref,
	})); err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: buildTime})
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: int64(len(b)), ModTime: buildTime}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
