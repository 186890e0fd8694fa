package containerdtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-dev/kindling/internal/testmodules"
)

// The images Launch imports into namespaces "default" and "k8s.io".
const (
	// PauseImage is the CRI sandbox image: a static program that waits
	// for a signal. runc pods run it; kindling pods never do.
	PauseImage = "docker.io/kindling/pause:test"
	// HelloWasmImage holds /hello.wasm, which prints "hello, world".
	HelloWasmImage = "docker.io/kindling/hello-wasm:test"
	// HelloNativeImage holds /hello, a static Linux program printing the
	// same, for runc.
	HelloNativeImage = "docker.io/kindling/hello-native:test"
	// Hello is what both hello images print.
	Hello = "hello, world\n"
)

// CtrLostMax bounds how often a benchmark repeats a `ctr run` that printed
// nothing. ctr sometimes loses the whole output of a container that printed
// and exited at once. The race is in ctr's output copying, long known
// upstream (containerd issue 770), and seen here with runc and the static
// hello. A run that exits 0 with no output at all is repeated and counted;
// any other wrong output is a failure.
const CtrLostMax = 3

// Options configures Launch.
type Options struct {
	// Dir is where everything goes (created if missing).
	Dir string
	// ShimDir holds prebuilt shim binaries (ShimBinary and ServerBinary);
	// empty builds them from source.
	ShimDir string
	// Race builds the shim with the race detector; race reports go to
	// files Dir/race.PID (see RaceReports).
	Race bool
	// CacheDir is the shim's compilation cache; default Dir/shim-cache.
	CacheDir string
	// Debug turns on debug logs.
	Debug bool
}

// Launch prepares a complete environment: the shim binary (built unless
// given), the pause and hello images, a started containerd with the CRI
// plugin, and the images imported into "default" and "k8s.io" and known to
// CRI. Close the Daemon when done.
func Launch(ctx context.Context, opts Options) (*Daemon, error) {
	if reason := Missing(); reason != "" {
		return nil, fmt.Errorf("containerdtest: %s", reason)
	}
	bin := filepath.Join(opts.Dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	if opts.ShimDir == "" {
		if err := BuildShim(ctx, bin, opts.Race); err != nil {
			return nil, err
		}
	} else {
		for _, name := range []string{ShimBinary, ServerBinary} {
			if err := linkOrCopy(filepath.Join(opts.ShimDir, name), filepath.Join(bin, name)); err != nil {
				return nil, err
			}
		}
	}
	pause, hello := filepath.Join(bin, "pause"), filepath.Join(bin, "hello")
	if err := BuildStatic(ctx, pause, PauseSource); err != nil {
		return nil, err
	}
	if err := BuildStatic(ctx, hello, HelloSource); err != nil {
		return nil, err
	}
	if opts.CacheDir == "" {
		opts.CacheDir = filepath.Join(opts.Dir, "shim-cache")
	}
	var env []string
	if opts.Race {
		// No 1 s pause at every shim exit; reports where RaceReports looks.
		env = append(env, "GORACE=atexit_sleep_ms=0 log_path="+filepath.Join(opts.Dir, "race"))
	}
	d, err := Start(ctx, Config{
		Dir:          opts.Dir,
		ShimDir:      bin,
		CacheDir:     opts.CacheDir,
		SandboxImage: PauseImage,
		Debug:        opts.Debug,
		Env:          env,
	})
	if err != nil {
		return nil, err
	}
	images, err := standardImages(pause, hello)
	if err == nil {
		err = d.ImportAll(ctx, images...)
	}
	if err != nil {
		_ = d.Close()
		return nil, err
	}
	return d, nil
}

func standardImages(pause, hello string) ([]Image, error) {
	pb, err := os.ReadFile(pause)
	if err != nil {
		return nil, err
	}
	hb, err := os.ReadFile(hello)
	if err != nil {
		return nil, err
	}
	return []Image{
		{Name: PauseImage, Files: []File{{Name: "pause", Mode: 0o755, Data: pb}}, Entrypoint: []string{"/pause"}},
		{Name: HelloNativeImage, Files: []File{{Name: "hello", Mode: 0o755, Data: hb}}, Entrypoint: []string{"/hello"}},
		{Name: HelloWasmImage, Files: []File{{Name: "hello.wasm", Data: testmodules.Hello}}, Entrypoint: []string{"/hello.wasm"}},
	}, nil
}

// ImportAll imports images into namespaces "default" and "k8s.io" and
// waits until the CRI plugin knows them.
func (d *Daemon) ImportAll(ctx context.Context, images ...Image) error {
	for _, ns := range []string{"default", "k8s.io"} {
		for _, img := range images {
			if err := d.Import(ctx, ns, img); err != nil {
				return err
			}
		}
	}
	c, err := d.CRI()
	if err != nil {
		return err
	}
	defer c.Close()
	for _, img := range images {
		if err := c.waitImage(ctx, img.Name); err != nil {
			return err
		}
	}
	return nil
}

// waitImage waits until the CRI plugin has seen an imported image (it
// learns of it from containerd's image events).
func (c *CRI) waitImage(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		st, err := c.Images.ImageStatus(ctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: name}})
		if err == nil && st.Image != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRI does not know image %s: %v", name, err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read shim binary: %w", err)
	}
	return os.WriteFile(dst, b, 0o755)
}

// RaceReports returns the race detector reports shims built with
// Options.Race wrote.
func (d *Daemon) RaceReports() ([]string, error) {
	files, err := filepath.Glob(filepath.Join(d.Dir, "race.*"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, string(b))
	}
	return out, nil
}
