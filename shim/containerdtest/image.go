package containerdtest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
)

// Media types of the images built here.
const (
	MediaTypeManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeConfig      = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer       = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeWasmLayer   = "application/vnd.wasm.content.layer.v1+wasm"
	MediaTypeWasmConfig  = "application/vnd.wasm.config.v0+json"
	annotationImageName  = "io.containerd.image.name"
	annotationRefName    = "org.opencontainers.image.ref.name"
	defaultSnapshotter   = "overlayfs"
	imageCreatedUnixTime = 1700000000
)

// File is a file of an image's layer.
type File struct {
	Name string // path in the image, without a leading slash
	Mode int64  // 0 means 0644
	Data []byte
}

// Image is a one-layer OCI image built in memory.
type Image struct {
	// Name is the image reference, fully qualified
	// ("docker.io/kindling/hello:latest").
	Name string
	// Files make up the image's one layer (an ordinary tar layer).
	Files []File
	// Entrypoint and Env are the image config's.
	Entrypoint []string
	Env        []string
	// Wasm, when set, makes the image's one layer these raw module bytes,
	// of media type application/vnd.wasm.content.layer.v1+wasm, with an
	// OCI image config for platform wasip1/wasm whose rootfs is empty:
	// containerd gives its containers an empty rootfs. Files is ignored.
	Wasm []byte
	// ArtifactConfig, with Wasm, gives the image the config of the CNCF
	// wasm OCI artifact (application/vnd.wasm.config.v0+json) instead.
	ArtifactConfig bool
}

type blob struct {
	mediaType string
	data      []byte
}

func (b blob) digest() string {
	sum := sha256.Sum256(b.data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (b blob) descriptor() map[string]any {
	return map[string]any{"mediaType": b.mediaType, "digest": b.digest(), "size": len(b.data)}
}

// blobs returns the image's layer and config, and its manifest.
func (img Image) blobs() ([]blob, blob, error) {
	var layer, config blob
	switch {
	case img.Wasm != nil && img.ArtifactConfig:
		layer = blob{MediaTypeWasmLayer, img.Wasm}
		cfg, err := json.Marshal(map[string]any{
			"created":      time.Unix(imageCreatedUnixTime, 0).UTC(),
			"architecture": "wasm",
			"os":           "wasip1",
			"layerDigests": []string{layer.digest()},
		})
		if err != nil {
			return nil, blob{}, err
		}
		config = blob{MediaTypeWasmConfig, cfg}
	case img.Wasm != nil:
		layer = blob{MediaTypeWasmLayer, img.Wasm}
		cfg, err := json.Marshal(map[string]any{
			"created":      time.Unix(imageCreatedUnixTime, 0).UTC(),
			"architecture": "wasm",
			"os":           "wasip1",
			"config":       map[string]any{"Entrypoint": img.Entrypoint, "Env": img.Env},
			"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{}},
		})
		if err != nil {
			return nil, blob{}, err
		}
		config = blob{MediaTypeConfig, cfg}
	default:
		tarball, err := layerTar(img.Files)
		if err != nil {
			return nil, blob{}, err
		}
		layer = blob{MediaTypeLayer, tarball}
		cfg, err := json.Marshal(map[string]any{
			"created":      time.Unix(imageCreatedUnixTime, 0).UTC(),
			"architecture": runtime.GOARCH,
			"os":           "linux",
			"config":       map[string]any{"Entrypoint": img.Entrypoint, "Env": img.Env},
			"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layer.digest()}},
		})
		if err != nil {
			return nil, blob{}, err
		}
		config = blob{MediaTypeConfig, cfg}
	}
	manifest := map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeManifest,
		"config":        config.descriptor(),
		"layers":        []any{layer.descriptor()},
	}
	if img.ArtifactConfig {
		manifest["artifactType"] = MediaTypeWasmConfig
	}
	mb, err := json.Marshal(manifest)
	if err != nil {
		return nil, blob{}, err
	}
	return []blob{layer, config}, blob{MediaTypeManifest, mb}, nil
}

// Archive returns the image as an OCI image layout tarball, the format
// `ctr images import` and containerd's client Import read.
func (img Image) Archive() ([]byte, error) {
	blobs, m, err := img.blobs()
	if err != nil {
		return nil, err
	}
	desc := m.descriptor()
	desc["annotations"] = map[string]string{annotationImageName: img.Name, annotationRefName: img.Name}
	if img.Wasm == nil {
		desc["platform"] = map[string]string{"os": "linux", "architecture": runtime.GOARCH}
	} else {
		desc["platform"] = map[string]string{"os": "wasip1", "architecture": "wasm"}
	}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": MediaTypeIndex, "manifests": []any{desc}})
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	add := func(name string, data []byte) error {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(imageCreatedUnixTime, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return nil, err
	}
	if err := add("index.json", index); err != nil {
		return nil, err
	}
	for _, b := range append(blobs, m) {
		if err := add("blobs/sha256/"+b.digest()[len("sha256:"):], b.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// layerTar is an uncompressed layer holding files (and their parent
// directories).
func layerTar(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		for i := 0; i < len(f.Name); i++ {
			if f.Name[i] == '/' && !dirs[f.Name[:i]] {
				dirs[f.Name[:i]] = true
				if err := tw.WriteHeader(&tar.Header{Name: f.Name[:i] + "/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Unix(imageCreatedUnixTime, 0)}); err != nil {
					return nil, err
				}
			}
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: f.Name, Mode: mode, Size: int64(len(f.Data)), Typeflag: tar.TypeReg, ModTime: time.Unix(imageCreatedUnixTime, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Import imports img into namespace ns and, unless it is a wasm
// artifact, unpacks it into the overlayfs snapshotter, as a pull would.
func (d *Daemon) Import(ctx context.Context, ns string, img Image) error {
	archive, err := img.Archive()
	if err != nil {
		return fmt.Errorf("build image %s: %w", img.Name, err)
	}
	name, err := d.ImportArchive(ctx, ns, archive, img.Wasm == nil)
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Name, err)
	}
	if name != img.Name {
		return fmt.Errorf("import %s into %s: got image %s", img.Name, ns, name)
	}
	return nil
}

// ImportArchive imports an archive holding one image (an OCI layout or a
// docker-archive tarball) into namespace ns, unpacks it into the overlayfs
// snapshotter when unpack is set, and returns the image's name.
func (d *Daemon) ImportArchive(ctx context.Context, ns string, archive []byte, unpack bool) (string, error) {
	client, err := d.Client()
	if err != nil {
		return "", err
	}
	ctx = namespaces.WithNamespace(ctx, ns)
	imgs, err := client.Import(ctx, bytes.NewReader(archive), containerd.WithAllPlatforms(true))
	if err != nil {
		return "", fmt.Errorf("import into %s: %w", ns, err)
	}
	if len(imgs) != 1 {
		return "", fmt.Errorf("import into %s: got images %v", ns, imgs)
	}
	if unpack {
		if err := containerd.NewImage(client, imgs[0]).Unpack(ctx, defaultSnapshotter); err != nil {
			return "", fmt.Errorf("unpack %s in %s: %w", imgs[0].Name, ns, err)
		}
	}
	return imgs[0].Name, nil
}
