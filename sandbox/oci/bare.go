package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/sandbox"
)

// BareBundle is an OCI bundle that runs a prepared function's command
// directly as the container's process, with no agent: the same root file
// system (the image's layers under an overlay), limits and namespaces as
// the function's instances. Benchmarks run it with the driver's runtime
// (`runc run`: create, start, wait, delete) to compare kindling's cold start
// with the bare runtime running the same program in the same kind of
// bundle. Close it before the driver.
type BareBundle struct {
	d      *Driver
	id     string
	dir    string
	runs   atomic.Int64
	closed atomic.Bool
}

// NewBareBundle writes a bare bundle for p, a function this driver
// prepared, under the driver's run directory. Its process runs argv, or
// the function's own command (the image's entrypoint and the spec's
// arguments) when argv is empty.
func (d *Driver) NewBareBundle(p sandbox.Prepared, argv []string) (*BareBundle, error) {
	pp, ok := p.(*prepared)
	if !ok || pp.d != d {
		return nil, fmt.Errorf("oci: bare bundle: not a function prepared by this driver: %w", errdefs.ErrInvalidArgument)
	}
	if len(argv) == 0 {
		var err error
		if argv, err = pp.img.Command(pp.spec.Args); err != nil {
			return nil, fmt.Errorf("oci: bare bundle of %q: %w", pp.spec.Name, err)
		}
	}
	b := &BareBundle{d: d, id: "bare-" + newID()}
	b.dir = filepath.Join(bundlesDir(d.root), b.id)
	if err := mountRootfs(b.dir, pp.lowers); err != nil {
		os.RemoveAll(b.dir)
		return nil, fmt.Errorf("oci: bare bundle: %w", err)
	}
	s := specFor(pp.tmpl, d.cgParent+"/"+b.id)
	proc := *s.Process
	proc.Args = argv
	s.Process = &proc
	config, err := json.Marshal(&s)
	if err == nil {
		err = os.WriteFile(b.path("config.json"), config, 0o600)
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("oci: bare bundle: %w", err)
	}
	return b, nil
}

// Dir is the bundle's directory.
func (b *BareBundle) Dir() string { return b.dir }

func (b *BareBundle) path(name string) string { return filepath.Join(b.dir, name) }

// Run runs the bundle once in the foreground with the driver's runtime
// (`runc run --bundle DIR ID`: it creates the container, starts it, waits
// for its process and deletes the container), the process's output going
// to stdout and stderr (nil discards it).
func (b *BareBundle) Run(ctx context.Context, stdout, stderr io.Writer) error {
	if b.closed.Load() {
		return fmt.Errorf("oci: bare bundle %s is closed: %w", b.id, errdefs.ErrFailedPrecondition)
	}
	id := b.id + "-" + strconv.FormatInt(b.runs.Add(1), 10)
	var errOut strings.Builder
	cmd := b.d.rt.command(ctx, "run", "--bundle", b.dir, id)
	cmd.Stdout = stdout
	cmd.Stderr = &errOut
	if stderr != nil {
		cmd.Stderr = io.MultiWriter(stderr, &errOut)
	}
	if err := cmd.Run(); err != nil {
		// A failed run may leave the container behind.
		_ = b.d.rt.delete(context.WithoutCancel(ctx), id)
		return fmt.Errorf("oci: %s run: %w: %s", b.d.rt.name, err, strings.TrimSpace(errOut.String()))
	}
	return nil
}

// Close unmounts the bundle's root file system and removes the bundle.
func (b *BareBundle) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	err := errors.Join(unmount(b.path("rootfs")), os.RemoveAll(b.dir))
	if err != nil {
		return fmt.Errorf("oci: close bare bundle: %w", err)
	}
	return nil
}
