package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	contentapi "github.com/containerd/containerd/api/services/content/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Media types of WebAssembly image layers. containerd does not unpack
// them into the container's rootfs (they are not tar archives): the shim
// reads the module from containerd's content store instead.
const (
	// MediaTypeWasmLayer is the layer of the CNCF TAG Runtime wasm OCI
	// artifact (its config is application/vnd.wasm.config.v0+json).
	MediaTypeWasmLayer = "application/vnd.wasm.content.layer.v1+wasm"
	// MediaTypeWasmModule is the module layer runwasi's images use.
	MediaTypeWasmModule = "application/vnd.w3c.wasm.module.v1+wasm"
	// MediaTypeWasmComponent is a component layer: not supported (the
	// engine runs WASI preview 1 modules).
	MediaTypeWasmComponent = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
)

const (
	mediaTypeOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeDockerIndex = "application/vnd.docker.distribution.manifest.list.v2+json"
	maxManifestSize      = 4 << 20
	maxModuleSize        = 512 << 20
)

// imageStore finds the wasm module of a container's image.
type imageStore interface {
	// wasmModule returns the image's name and the module of its wasm
	// layer. An image with no wasm layer is errdefs.ErrNotFound.
	wasmModule(ctx context.Context, containerID string) (image string, module []byte, err error)
}

// contentStore is an imageStore reading containerd's metadata and content
// over its gRPC API, at the address containerd gave the shim.
type contentStore struct {
	address string
	ns      string

	once sync.Once
	conn *grpc.ClientConn
	err  error
}

func newContentStore(address, ns string) *contentStore {
	return &contentStore{address: address, ns: ns}
}

func (c *contentStore) dial() (*grpc.ClientConn, error) {
	c.once.Do(func() {
		c.conn, c.err = grpc.NewClient("unix://"+c.address, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if c.err != nil {
			c.err = fmt.Errorf("connect to containerd at %s: %w", c.address, c.err)
		}
	})
	return c.conn, c.err
}

func (c *contentStore) close() {
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

func (c *contentStore) wasmModule(ctx context.Context, containerID string) (string, []byte, error) {
	conn, err := c.dial()
	if err != nil {
		return "", nil, err
	}
	ctx = namespaces.WithNamespace(ctx, c.ns)
	ctr, err := containersapi.NewContainersClient(conn).Get(ctx, &containersapi.GetContainerRequest{ID: containerID})
	if err != nil {
		return "", nil, fmt.Errorf("get container %s: %w", containerID, errdefs.FromGRPC(err))
	}
	name := ctr.Container.Image
	if name == "" {
		return "", nil, fmt.Errorf("container %s has no image: %w", containerID, errdefs.ErrNotFound)
	}
	img, err := imagesapi.NewImagesClient(conn).Get(ctx, &imagesapi.GetImageRequest{Name: name})
	if err != nil {
		return "", nil, fmt.Errorf("get image %s: %w", name, errdefs.FromGRPC(err))
	}
	content := contentapi.NewContentClient(conn)
	target := descriptor{MediaType: img.Image.Target.MediaType, Digest: img.Image.Target.Digest}
	if target.MediaType == mediaTypeOCIIndex || target.MediaType == mediaTypeDockerIndex {
		b, err := readBlob(ctx, content, target.Digest, maxManifestSize)
		if err != nil {
			return "", nil, err
		}
		if target, err = pickManifest(b); err != nil {
			return "", nil, fmt.Errorf("image %s: %w", name, err)
		}
	}
	b, err := readBlob(ctx, content, target.Digest, maxManifestSize)
	if err != nil {
		return "", nil, err
	}
	layer, err := wasmLayer(b)
	if err != nil {
		return "", nil, fmt.Errorf("image %s: %w", name, err)
	}
	module, err := readBlob(ctx, content, layer.Digest, maxModuleSize)
	if err != nil {
		return "", nil, err
	}
	if !bytes.HasPrefix(module, wasmMagic) {
		return "", nil, fmt.Errorf("image %s: layer %s is not a WebAssembly module: %w", name, layer.Digest, errdefs.ErrInvalidArgument)
	}
	return name, module, nil
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform,omitempty"`
}

// pickManifest chooses an index's manifest: a wasm one if there is one,
// else this node's platform, else the first.
func pickManifest(index []byte) (descriptor, error) {
	var idx struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(index, &idx); err != nil {
		return descriptor{}, fmt.Errorf("parse index: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(idx.Manifests) == 0 {
		return descriptor{}, fmt.Errorf("empty index: %w", errdefs.ErrNotFound)
	}
	for _, want := range [][2]string{{"wasip1", "wasm"}, {"wasi", "wasm"}, {"linux", runtime.GOARCH}} {
		for _, m := range idx.Manifests {
			if m.Platform != nil && m.Platform.OS == want[0] && m.Platform.Architecture == want[1] {
				return m, nil
			}
		}
	}
	return idx.Manifests[0], nil
}

// wasmLayer finds a manifest's wasm module layer.
func wasmLayer(manifest []byte) (descriptor, error) {
	var m struct {
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(manifest, &m); err != nil {
		return descriptor{}, fmt.Errorf("parse manifest: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	for _, l := range m.Layers {
		if l.MediaType == MediaTypeWasmLayer || l.MediaType == MediaTypeWasmModule {
			return l, nil
		}
	}
	if slices.ContainsFunc(m.Layers, func(l descriptor) bool { return l.MediaType == MediaTypeWasmComponent }) {
		return descriptor{}, fmt.Errorf("its wasm layer is a component; only WASI preview 1 modules are supported: %w", errdefs.ErrNotImplemented)
	}
	return descriptor{}, fmt.Errorf("no wasm layer (%s) in the image: %w", MediaTypeWasmLayer, errdefs.ErrNotFound)
}

// readBlob reads a blob from the content store, refusing more than limit
// bytes.
func readBlob(ctx context.Context, c contentapi.ContentClient, digest string, limit int64) ([]byte, error) {
	stream, err := c.Read(ctx, &contentapi.ReadContentRequest{Digest: digest})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", digest, errdefs.FromGRPC(err))
	}
	var buf bytes.Buffer
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", digest, errdefs.FromGRPC(err))
		}
		if int64(buf.Len()+len(resp.Data)) > limit {
			return nil, fmt.Errorf("blob %s exceeds %d bytes: %w", digest, limit, errdefs.ErrInvalidArgument)
		}
		buf.Write(resp.Data)
	}
}
