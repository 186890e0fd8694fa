package shim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/shim/launch"
)

// CRI annotations on a container's OCI spec.
const (
	// AnnotationContainerType is "sandbox" for a pod's sandbox (pause)
	// container and "container" for its workloads.
	AnnotationContainerType = "io.kubernetes.cri.container-type"
	// AnnotationSandboxID names the pod sandbox a container belongs to; a
	// pod's containers share one server process, named by it.
	AnnotationSandboxID = launch.AnnotationSandboxID
	// containerTypeSandbox is AnnotationContainerType's value for the pod
	// sandbox.
	containerTypeSandbox = "sandbox"
)

// DefaultMemoryMB is a process's memory limit when the spec sets none: the
// whole 32-bit WebAssembly address space. The allocator reserves it
// without committing it, so an unlimited guest costs only what it touches.
const DefaultMemoryMB = 4096

// wasmMagic starts every WebAssembly binary module.
var wasmMagic = []byte("\x00asm")

// readSpec reads the OCI runtime spec of the bundle at dir.
func readSpec(dir string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read OCI spec: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse OCI spec %s: %v: %w", filepath.Join(dir, "config.json"), err, errdefs.ErrInvalidArgument)
	}
	return &s, nil
}

// isSandbox reports whether the spec is a CRI pod's sandbox container.
func isSandbox(s *specs.Spec) bool {
	return s.Annotations[AnnotationContainerType] == containerTypeSandbox
}

// memoryMB is the spec's memory limit in MiB (rounded up), or
// DefaultMemoryMB when it sets none.
func memoryMB(r *specs.LinuxResources) int {
	if r == nil || r.Memory == nil || r.Memory.Limit == nil || *r.Memory.Limit <= 0 {
		return DefaultMemoryMB
	}
	mb := (*r.Memory.Limit + 1<<20 - 1) >> 20
	if mb > DefaultMemoryMB {
		return DefaultMemoryMB
	}
	return int(mb)
}

// program is a wasm module found in a container's root filesystem, with
// everything the wasm sandbox needs to run it as one process.
type program struct {
	path string // inside the rootfs, absolute
	spec sandbox.Spec
}

// resolveProgram finds the process's entrypoint (args[0]) in the root
// filesystem at rootfs and builds its program (see newProgram).
func resolveProgram(rootfs string, rootReadOnly bool, proc *specs.Process, mounts []specs.Mount, memMB int) (*program, error) {
	if proc == nil || len(proc.Args) == 0 {
		return nil, fmt.Errorf("the OCI spec has no process args: nothing to run: %w", errdefs.ErrInvalidArgument)
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, fmt.Errorf("open root filesystem: %w", err)
	}
	defer root.Close()
	p, bin, err := findModule(root, proc.Args[0], workdir(proc), proc.Env)
	if err != nil {
		return nil, err
	}
	return newProgram(p, bin, rootfs, rootReadOnly, proc, mounts, memMB), nil
}

// newProgram is the program running module bin (found at path) as
// process proc: argv and environment from the process, the rootfs as the
// guest's "/", and every bind mount of the container whose source is a
// directory as a further preopen.
func newProgram(path string, bin []byte, rootfs string, rootReadOnly bool, proc *specs.Process, mounts []specs.Mount, memMB int) *program {
	sum := sha256.Sum256(bin)
	env := slices.Clone(proc.Env)
	if cwd := workdir(proc); cwd != "/" && !hasEnv(env, "PWD") {
		// WASI has no working directory; language runtimes (Go's wasip1,
		// wasi-libc) start from $PWD when it is set.
		env = append(env, "PWD="+cwd)
	}
	argv0, args := path, []string(nil)
	if len(proc.Args) > 0 {
		argv0, args = proc.Args[0], slices.Clone(proc.Args[1:])
	}
	pre := []sandbox.Mount{{HostPath: rootfs, GuestPath: "/", ReadOnly: rootReadOnly}}
	pre = append(pre, preopens(mounts)...)
	return &program{
		path: path,
		spec: sandbox.Spec{
			Name:     argv0,
			Artifact: "sha256:" + hex.EncodeToString(sum[:]),
			Load:     func() ([]byte, error) { return bin, nil },
			MemoryMB: memMB,
			Args:     args,
			Env:      env,
			Mounts:   pre,
		},
	}
}

func workdir(proc *specs.Process) string {
	if proc.Cwd == "" {
		return "/"
	}
	return proc.Cwd
}

// findModule locates arg0 as a shell would: a path with a slash is taken
// relative to cwd, a bare name is searched in $PATH and then in cwd. All
// lookups stay inside root, whatever symlinks say. It returns the path
// found (absolute, inside the rootfs) and the module's bytes.
func findModule(root *os.Root, arg0, cwd string, env []string) (string, []byte, error) {
	var candidates []string
	switch {
	case path.IsAbs(arg0):
		candidates = []string{arg0}
	case strings.Contains(arg0, "/"):
		candidates = []string{path.Join(cwd, arg0)}
	default:
		for _, dir := range filepath.SplitList(envValue(env, "PATH")) {
			if path.IsAbs(dir) {
				candidates = append(candidates, path.Join(dir, arg0))
			}
		}
		candidates = append(candidates, path.Join(cwd, arg0))
	}
	for _, c := range candidates {
		rel, err := resolveInRoot(root, c)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue
		}
		if err != nil {
			return "", nil, fmt.Errorf("resolve entrypoint %s: %w", c, err)
		}
		if rel == "" {
			continue
		}
		bin, err := root.ReadFile(rel)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ENOTDIR) {
			continue
		}
		if err != nil {
			return "", nil, fmt.Errorf("read entrypoint %s: %w", c, err)
		}
		if !bytes.HasPrefix(bin, wasmMagic) {
			return "", nil, fmt.Errorf("entrypoint %s is not a WebAssembly module (this runtime runs .wasm files; use runc for native programs): %w", c, errdefs.ErrInvalidArgument)
		}
		return path.Clean(c), bin, nil
	}
	return "", nil, fmt.Errorf("entrypoint %q not found in the container's root filesystem (looked for %s): %w",
		arg0, strings.Join(candidates, ", "), errdefs.ErrNotFound)
}

// preopens turns the container's bind mounts of directories into WASI
// preopens. Other mounts (proc, sysfs, tmpfs, devpts, mqueue, cgroup) and
// bind mounts of single files (/etc/hosts, /dev/termination-log) have no
// WASI equivalent and are skipped.
// maxSymlinks bounds symlink resolution, as the kernel's ELOOP does.
const maxSymlinks = 40

// resolveInRoot resolves p inside root as if root were "/" (a chroot):
// absolute symlinks restart at the root, ".." stops there. It returns
// the symlink-free path relative to root ("" for the root itself).
func resolveInRoot(root *os.Root, p string) (string, error) {
	var resolved []string
	pending := strings.Split(strings.TrimPrefix(path.Clean("/"+p), "/"), "/")
	links := 0
	for len(pending) > 0 {
		name := pending[0]
		pending = pending[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			if len(resolved) > 0 {
				resolved = resolved[:len(resolved)-1]
			}
			continue
		}
		cur := path.Join(append(resolved, name)...)
		st, err := root.Lstat(cur)
		if err != nil {
			return "", err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			resolved = append(resolved, name)
			continue
		}
		if links++; links > maxSymlinks {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := root.Readlink(cur)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			resolved = resolved[:0]
		}
		pending = append(strings.Split(target, "/"), pending...)
	}
	return path.Join(resolved...), nil
}

func preopens(mounts []specs.Mount) []sandbox.Mount {
	var out []sandbox.Mount
	for _, m := range mounts {
		if !isBind(m) || !path.IsAbs(m.Destination) || m.Destination == "/" {
			continue
		}
		if st, err := os.Stat(m.Source); err != nil || !st.IsDir() {
			continue
		}
		out = append(out, sandbox.Mount{
			HostPath:  m.Source,
			GuestPath: path.Clean(m.Destination),
			ReadOnly:  slices.Contains(m.Options, "ro"),
		})
	}
	return out
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" || m.Type == "rbind" {
		return true
	}
	return slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}
