// Package oci is kindling's container sandbox: functions packaged as OCI
// images, run by runc or crun.
//
// Prepare finds the function's image in an image.Store, importing the
// artifact (an image tarball) first when the store does not have it. Start
// creates one container: an overlayfs root (the image's unpacked layers,
// shared and read-only, under a private upper directory), an OCI bundle
// whose process is kindling-agent, and new pid, ipc, uts, mount and network
// namespaces (the network has only a loopback interface). Its cgroup caps
// memory at the function's memory size, CPU in proportion to it (one CPU
// per GiB, at least MinCPUs) and the number of processes. The agent
// connects to a unix socket the driver listens on, bind-mounted into the
// container, and writes one readiness byte: Start blocks on that byte, it
// never polls. Each Invoke then sends one request to the agent, which runs
// the image's entrypoint as a fresh process with the request's environment
// and body and returns its output and exit status. An instance serves any
// number of requests, one at a time; its files persist between them.
//
// Failures map to errdefs.FunctionError kinds: a non-zero exit is KindExit;
// a kill by the kernel's OOM killer (the cgroup's oom_kill count rose) is
// KindOOM; death by any other signal (SIGSEGV, SIGABRT, ...) is KindTrap;
// running past the context's deadline is KindTimeout (the agent kills the
// function's process group, or the driver the whole container when the
// agent does not answer); a container that dies or an agent that cannot
// start the function is KindCrash.
//
// Everything lives under Config.Root, which one driver owns at a time (a
// lock file says so); New removes what a crashed driver left there (see
// Reconcile). docs/oci.md has the design and the measurements.
package oci

import (
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/image"
	"github.com/kindling-dev/kindling/internal/mountinfo"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
)

// RuntimeName is the name functions use to select this sandbox.
const RuntimeName = "oci"

// Phases this sandbox records beside the shared ones. phase.Compile is the
// image lookup and the function's runtime spec (at Prepare);
// phase.Instantiate is the runtime's `run --detach` (its create and start
// in one command); phase.Run is one request's round trip through the agent.
const (
	PhaseUnpack = phase.Unpack // importing an image tarball: its new layers unpacked (Prepare)
	PhaseRootfs = phase.Rootfs // mounting the instance's overlay root file system
	PhaseBundle = phase.Bundle // writing the bundle: config.json, the agent's socket
	PhaseReady  = phase.Ready  // from the runtime's return until the agent signals readiness
)

// Defaults for Config.
const (
	DefaultRuntime   = "runc"
	DefaultPidsLimit = 64
	DefaultMinCPUs   = 0.1
)

// Config configures a Driver.
type Config struct {
	// Root is the driver's own directory: bundles, the runtime's state, a
	// copy of the agent. One driver uses a root at a time.
	Root string
	// Runtime is the OCI runtime, "runc" (the default) or "crun": a name
	// looked up on PATH, or a path.
	Runtime string
	// Images is where functions' images are found and imported; nil opens
	// a store in Root/images.
	Images *image.Store
	// AgentPath is a statically linked kindling-agent (CGO_ENABLED=0 go
	// build ./cmd/kindling-agent). Empty means kindling-agent next to the
	// running executable, else on PATH.
	AgentPath string
	// PidsLimit caps the processes (and threads) of an instance; default 64.
	PidsLimit int64
	// MinCPUs is the least CPU an instance gets, however small its memory;
	// default 0.1.
	MinCPUs float64
}

// Driver is the oci sandbox. It is safe for concurrent use.
type Driver struct {
	root      string
	rt        *runtimeCLI
	images    *image.Store
	agent     string // the agent, copied into the run tmpfs
	cg        *cgroups
	cgParent  string
	pidsLimit int64
	minCPUs   float64
	lock      *os.File

	mu        sync.Mutex
	instances map[*instance]struct{}
	closed    bool
}

var _ sandbox.Driver = (*Driver)(nil)

// maxSocketPath is the longest path a unix socket can be bound at.
const maxSocketPath = 107

// New creates a driver rooted at cfg.Root, after removing what a previous
// driver there left behind (Reconcile). It fails with an error wrapping
// errdefs.ErrFailedPrecondition when this host cannot run containers: not
// root, no runtime binary, no static agent, or crun on cgroups in hybrid
// mode (see CheckHybridCgroups).
func New(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.Root == "" {
		return nil, fmt.Errorf("oci: Config.Root is required: %w", errdefs.ErrInvalidArgument)
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("oci: %w", err)
	}
	if strings.ContainsAny(root, ",:") {
		return nil, fmt.Errorf("oci: root %q: overlayfs options cannot hold ',' or ':': %w", root, errdefs.ErrInvalidArgument)
	}
	if len(socketPath(root, newID())) > maxSocketPath {
		return nil, fmt.Errorf("oci: root %q is too long for the agents' unix sockets (at most %d bytes in all): %w",
			root, maxSocketPath, errdefs.ErrInvalidArgument)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("oci: needs root (overlay mounts, cgroups): %w", errdefs.ErrFailedPrecondition)
	}
	if cfg.Runtime == "" {
		cfg.Runtime = DefaultRuntime
	}
	d := &Driver{root: root, pidsLimit: cfg.PidsLimit, minCPUs: cfg.MinCPUs, images: cfg.Images,
		cgParent: cgroupParent(root), instances: map[*instance]struct{}{}}
	if d.pidsLimit <= 0 {
		d.pidsLimit = DefaultPidsLimit
	}
	if d.minCPUs <= 0 {
		d.minCPUs = DefaultMinCPUs
	}
	if d.rt, err = newRuntimeCLI(cfg.Runtime, stateDir(root)); err != nil {
		return nil, err
	}
	if d.rt.name == "crun" {
		if err := CheckHybridCgroups(); err != nil {
			return nil, err
		}
	}
	if d.cg, err = findCgroups(); err != nil {
		return nil, fmt.Errorf("oci: %v: %w", err, errdefs.ErrFailedPrecondition)
	}
	if err := os.MkdirAll(runDir(root), 0o700); err != nil {
		return nil, fmt.Errorf("oci: %w", err)
	}
	if d.lock, err = lockRoot(root); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = unmount(runDir(root))
			d.lock.Close()
		}
	}()
	if err := reconcile(ctx, root); err != nil {
		return nil, fmt.Errorf("oci: clean up after a previous driver: %w", err)
	}
	if err := unix.Mount("tmpfs", runDir(root), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return nil, fmt.Errorf("oci: mount tmpfs on %s: %w", runDir(root), err)
	}
	for _, dir := range []string{binDir(root), bundlesDir(root), d.rt.state} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("oci: %w", err)
		}
	}
	if d.agent, err = installAgent(cfg.AgentPath, binDir(root)); err != nil {
		return nil, err
	}
	if d.images == nil {
		if d.images, err = image.Open(filepath.Join(root, "images")); err != nil {
			return nil, fmt.Errorf("oci: %w", err)
		}
	}
	if strings.ContainsAny(d.images.Root(), ",:") {
		return nil, fmt.Errorf("oci: image store %q: overlayfs options cannot hold ',' or ':': %w", d.images.Root(), errdefs.ErrInvalidArgument)
	}
	ok = true
	return d, nil
}

// lockRoot takes the root's lock, held until the driver closes.
func lockRoot(root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, "lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("oci: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("oci: root %s is in use by another driver: %w", root, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("oci: lock %s: %w", root, err)
	}
	return f, nil
}

// installAgent finds the agent, checks that it is statically linked (it
// runs inside images that may have no C library) and copies it into dir,
// on the file system where instances hard-link it.
func installAgent(path, dir string) (string, error) {
	if path == "" {
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), "kindling-agent"); fileExists(p) {
				path = p
			}
		}
	}
	if path == "" {
		path = "kindling-agent"
	}
	if !strings.Contains(path, "/") {
		p, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("oci: agent: %v (build it with CGO_ENABLED=0 go build ./cmd/kindling-agent): %w", err, errdefs.ErrFailedPrecondition)
		}
		path = p
	}
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("oci: agent %s: not a Linux executable: %v: %w", path, err, errdefs.ErrFailedPrecondition)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			f.Close()
			return "", fmt.Errorf("oci: agent %s is dynamically linked; build it with CGO_ENABLED=0: %w", path, errdefs.ErrFailedPrecondition)
		}
	}
	f.Close()
	dst := filepath.Join(dir, "kindling-agent")
	if err := copyFile(path, dst, 0o755); err != nil {
		return "", fmt.Errorf("oci: install agent: %w", err)
	}
	return dst, nil
}

// Name implements sandbox.Driver: "oci", whichever the runtime.
func (d *Driver) Name() string { return RuntimeName }

// Runtime returns the base name of the OCI runtime binary ("runc", "crun").
func (d *Driver) Runtime() string { return d.rt.name }

// Images returns the driver's image store.
func (d *Driver) Images() *image.Store { return d.images }

// Capabilities implements sandbox.Driver: instances serve many requests,
// and memory and CPU are limited.
func (d *Driver) Capabilities() sandbox.Capabilities {
	return sandbox.Capabilities{SingleUse: false, MemoryLimit: true, CPUShares: true}
}

// Prepare implements sandbox.Driver. spec.Artifact names the image: an
// image ID ("sha256:" of its config), a name ("hello:latest") or an alias
// recorded at import, such as the digest of the tarball it came from. When
// the store has no such image, spec.Load must return an image tarball,
// which is imported (phase load, then unpack) and aliased to spec.Artifact.
// The function's command is the image's entrypoint followed by spec.Args,
// or by its Cmd when spec.Args is empty.
func (d *Driver) Prepare(ctx context.Context, spec sandbox.Spec, rec *phase.Recorder) (sandbox.Prepared, error) {
	if spec.MemoryMB <= 0 {
		return nil, fmt.Errorf("oci: memoryMB must be positive: %w", errdefs.ErrInvalidArgument)
	}
	img, err := d.resolve(ctx, spec, rec)
	if err != nil {
		return nil, err
	}
	t := time.Now()
	argv, err := img.Command(spec.Args)
	if err != nil {
		return nil, fmt.Errorf("oci: function %q: %w", spec.Name, err)
	}
	lim := limits{memoryMB: spec.MemoryMB, cpus: CPUsFor(spec.MemoryMB, d.minCPUs), pids: d.pidsLimit}
	tmpl, err := specTemplate(img, spec, argv, lim)
	if err != nil {
		return nil, fmt.Errorf("oci: function %q: %w", spec.Name, err)
	}
	lowers := d.images.LayerDirs(img)
	for l, r := 0, len(lowers)-1; l < r; l, r = l+1, r-1 {
		lowers[l], lowers[r] = lowers[r], lowers[l] // overlayfs wants the top layer first
	}
	if len(lowers) == 0 {
		empty := filepath.Join(d.root, "empty")
		if err := os.MkdirAll(empty, 0o755); err != nil {
			return nil, fmt.Errorf("oci: %w", err)
		}
		lowers = []string{empty}
	}
	rec.Since(phase.Compile, t, "image="+strings.TrimPrefix(img.ID, "sha256:")[:12])
	return &prepared{d: d, spec: spec, img: img, lowers: lowers, tmpl: tmpl}, nil
}

// resolve finds the function's image, importing spec.Load's tarball when
// the store does not have it.
func (d *Driver) resolve(ctx context.Context, spec sandbox.Spec, rec *phase.Recorder) (*image.Image, error) {
	if spec.Artifact != "" {
		img, err := d.images.Resolve(spec.Artifact)
		if err == nil {
			return img, nil
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("oci: function %q: %w", spec.Name, err)
		}
		if spec.Load == nil {
			return nil, fmt.Errorf("oci: function %q: %w", spec.Name, err)
		}
	} else if spec.Load == nil {
		return nil, fmt.Errorf("oci: function %q names no image: %w", spec.Name, errdefs.ErrInvalidArgument)
	}
	start := time.Now()
	b, err := spec.Load()
	if err != nil {
		return nil, fmt.Errorf("oci: function %q: load artifact %s: %w", spec.Name, spec.Artifact, err)
	}
	t := rec.Since(phase.ArtifactLoad, start, "")
	var aliases []string
	if spec.Artifact != "" {
		aliases = append(aliases, spec.Artifact)
	}
	img, err := d.images.ImportBytes(ctx, b, aliases...)
	if err != nil {
		return nil, fmt.Errorf("oci: function %q: %w", spec.Name, err)
	}
	rec.Since(PhaseUnpack, t, fmt.Sprintf("layers=%d new=%d", len(img.Layers), img.Unpacked))
	return img, nil
}

// Close implements sandbox.Driver: it closes every instance still open and
// removes the driver's cgroups, then releases the root.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	insts := make([]*instance, 0, len(d.instances))
	for i := range d.instances {
		insts = append(insts, i)
	}
	d.mu.Unlock()
	errs := make([]error, len(insts))
	var wg sync.WaitGroup
	for n, i := range insts {
		wg.Go(func() { errs[n] = i.Close(ctx) })
	}
	wg.Wait()
	d.cg.pruneParents(d.cgParent)
	errs = append(errs, unmount(runDir(d.root)), d.lock.Close())
	return errors.Join(errs...)
}

func (d *Driver) track(i *instance) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.instances[i] = struct{}{}
	return true
}

func (d *Driver) untrack(i *instance) {
	d.mu.Lock()
	delete(d.instances, i)
	d.mu.Unlock()
}

type prepared struct {
	closed atomic.Bool
	d      *Driver
	spec   sandbox.Spec
	img    *image.Image
	lowers []string    // the image's layer directories, top first
	tmpl   *specs.Spec // the runtime spec all its instances share
}

// Close implements sandbox.Prepared: no more instances start. Instances
// already started keep running until they are closed.
func (p *prepared) Close(ctx context.Context) error {
	p.closed.Store(true)
	return nil
}

// Reconcile removes what a driver rooted at root left behind when its
// process died: containers in the runtimes' state under root, mounts under
// root, the driver's cgroups and instance bundles. New calls it; call it
// directly to clean up a root no driver will use again. It fails with an
// error wrapping errdefs.ErrUnavailable while a live driver holds root.
func Reconcile(ctx context.Context, root string) error {
	root, err := filepath.Abs(root)
	if err != nil {
		return fmt.Errorf("oci: reconcile: %w", err)
	}
	if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	lock, err := lockRoot(root)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := reconcile(ctx, root); err != nil {
		return fmt.Errorf("oci: reconcile %s: %w", root, err)
	}
	if cg, err := findCgroups(); err == nil {
		cg.pruneParents(cgroupParent(root))
	}
	return nil
}

func reconcile(ctx context.Context, root string) error {
	// Containers, through the runtime that made them (its state directory
	// is named after it): this kills their processes and removes their
	// cgroups and state. It is a first pass: what it cannot do (the runtime
	// is gone, its state is broken) the next steps do.
	runtimes, _ := os.ReadDir(stateDir(root))
	for _, e := range runtimes {
		rt, err := newRuntimeCLI(e.Name(), stateDir(root))
		if !e.IsDir() || err != nil {
			continue
		}
		ids, _ := rt.containers()
		for _, id := range ids {
			_ = rt.delete(ctx, id)
		}
	}
	var errs []error
	// Cgroups left: their processes are killed and the cgroups removed.
	cg, err := findCgroups()
	errs = append(errs, err)
	if err == nil {
		errs = append(errs, cg.removeTree(cgroupParent(root)))
	}
	// Mounts: the instances' root file systems, then the tmpfs holding
	// them, the bundles and the runtimes' state.
	points, err := mountinfo.Under(root)
	errs = append(errs, err)
	for _, p := range points {
		if p != root {
			errs = append(errs, unmount(p))
		}
	}
	if entries, err := os.ReadDir(runDir(root)); err == nil {
		for _, e := range entries {
			errs = append(errs, os.RemoveAll(filepath.Join(runDir(root), e.Name())))
		}
	}
	return errors.Join(errs...)
}

// A driver's root holds its lock, by default its image store, and run/: a
// tmpfs the driver mounts for what lasts no longer than its containers —
// the runtime's state, the bundles with their root file systems' upper
// directories, and the agent they link to. Containers' file writes thus
// live in memory and count against their memory limit, and creating and
// removing an instance never waits on a disk.
func runDir(root string) string     { return filepath.Join(root, "run") }
func stateDir(root string) string   { return filepath.Join(root, "run", "state") }
func bundlesDir(root string) string { return filepath.Join(root, "run", "c") }
func binDir(root string) string     { return filepath.Join(root, "run", "bin") }

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// copyFile copies src to dst through a temporary file and a rename, so
// that instances holding links to the old dst are not disturbed.
func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(perm); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(out.Name(), dst)
}

var _ sandbox.ImageResolver = (*Driver)(nil)

// Resolve implements sandbox.ImageResolver: a name, name:tag or ID of an
// imported image becomes its ID, the artifact Prepare takes.
func (d *Driver) Resolve(ref string) (string, error) {
	img, err := d.images.Resolve(ref)
	if err != nil {
		return "", err
	}
	return img.ID, nil
}
