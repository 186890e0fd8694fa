package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/sandbox/wasm/internal/wasmbin"
)

// snapshotFormat versions the on-disk snapshot layout; bump it to
// invalidate every stored snapshot.
const snapshotFormat = 1

// initTimeout bounds a module's initialization at snapshot time.
const initTimeout = time.Minute

// snapshot is an initialized instance, captured: its memory image (a file
// that instances map copy-on-write) and its mutable globals. It is shared
// by every instance of the function and never written.
type snapshot struct {
	key     string
	module  *program // the module with globals exported and data passive
	image   *memImage
	globals []globalValue
}

type globalValue struct {
	Export string `json:"export"`
	Value  uint64 `json:"value"`
}

type snapshotMeta struct {
	Format     int           `json:"format"`
	MemorySize uint64        `json:"memorySize"`
	Globals    []globalValue `json:"globals"`
}

// Close implements the closer that Driver.release calls.
func (s *snapshot) Close(ctx context.Context) error {
	return errors.Join(s.module.Close(ctx), s.image.release())
}

func (s *snapshot) restoreGlobals(mod api.Module) error {
	for _, g := range s.globals {
		mg, ok := mod.ExportedGlobal(g.Export).(api.MutableGlobal)
		if !ok {
			return fmt.Errorf("global %s is not a mutable export", g.Export)
		}
		mg.Set(g.Value)
	}
	return nil
}

// snapshotKey identifies a snapshot: the artifact, the engine, the format
// and everything initialization could observe.
func snapshotKey(spec sandbox.Spec) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d\x00", spec.Artifact, engineVersion(), snapshotFormat, spec.MemoryMB)
	for _, a := range spec.Args {
		fmt.Fprintf(h, "arg\x00%s\x00", a)
	}
	for _, e := range spec.Env {
		fmt.Fprintf(h, "env\x00%s\x00", e)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// prepareSnapshot returns the function's snapshot, creating it if needed,
// or nil and the reason the function runs as a command instead.
func (d *Driver) prepareSnapshot(ctx context.Context, spec sandbox.Spec, rec *phase.Recorder) (*snapshot, string, error) {
	start := time.Now()
	bin, err := spec.Load()
	if err != nil {
		return nil, "", fmt.Errorf("wasm: load artifact %s: %w", spec.Artifact, err)
	}
	rec.Since(phase.ArtifactLoad, start, "")
	m, err := wasmbin.Parse(bin)
	if err != nil {
		return nil, "", nil // the command path compiles it and reports the engine's reason
	}
	if !m.Exports[exportInitialize] || !m.Exports[exportHandle] {
		return nil, "a WASI command module starts from scratch per invocation; build it as a reactor with the kindling Go SDK (kindling build) to start from a snapshot", nil
	}
	key := "snapshot:" + snapshotKey(spec)
	v, err := d.shared(key, func() (any, error) { return d.buildSnapshot(ctx, spec, m, key, rec) }, rec)
	switch {
	case errors.Is(err, wasmbin.ErrUnsupported) && m.Exports[exportStart]:
		return nil, "cannot snapshot: " + err.Error(), nil
	case errors.Is(err, wasmbin.ErrUnsupported):
		return nil, "", fmt.Errorf("cannot snapshot the module, and it has no _start to run without one: %v: %w", err, errdefs.ErrInvalidArgument)
	case err != nil:
		return nil, "", err
	}
	return v.(*snapshot), "", nil
}

// buildSnapshot compiles the snapshot module and loads the snapshot from
// disk, or initializes an instance and captures it.
func (d *Driver) buildSnapshot(ctx context.Context, spec sandbox.Spec, m *wasmbin.Module, key string, rec *phase.Recorder) (*snapshot, error) {
	mod, err := d.compileForSnapshot(ctx, m, rec)
	if err != nil {
		return nil, err
	}
	s := &snapshot{key: key, module: mod}
	dir := filepath.Join(d.snapDir, key[len("snapshot:"):])
	start := time.Now()
	meta, err := readMeta(dir)
	detail := CacheDisk
	if err != nil {
		detail = CacheMiss
		meta, err = d.capture(ctx, spec, m, mod, dir)
		if err != nil {
			mod.Close(ctx)
			return nil, err
		}
	}
	if s.image, err = openImage(filepath.Join(dir, "memory"), meta.MemorySize); err != nil {
		mod.Close(ctx)
		return nil, err
	}
	s.globals = meta.Globals
	rec.Since(phase.Snapshot, start, detail)
	return s, nil
}

// compileForSnapshot compiles the module without its data segments, or,
// if its code refers to them, with them passive.
func (d *Driver) compileForSnapshot(ctx context.Context, m *wasmbin.Module, rec *phase.Recorder) (*program, error) {
	var err error
	for _, variant := range []func() ([]byte, error){m.ForSnapshot, m.ForSnapshotPassive} {
		var bin []byte
		if bin, err = variant(); err != nil {
			return nil, err
		}
		sum := sha256.Sum256(bin)
		var mod *program
		if mod, err = d.compile(ctx, "sha256:"+hex.EncodeToString(sum[:]), bin, rec); err == nil {
			return mod, nil
		}
	}
	return nil, err
}

func readMeta(dir string) (snapshotMeta, error) {
	var meta snapshotMeta
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return meta, err
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return meta, err
	}
	st, err := os.Stat(filepath.Join(dir, "memory"))
	if err != nil {
		return meta, err
	}
	if meta.Format != snapshotFormat || uint64(st.Size()) != meta.MemorySize || meta.MemorySize%wasmPageSize != 0 {
		return meta, errors.New("stale or corrupt snapshot")
	}
	return meta, nil
}

// capture runs the module's initialization in a fresh instance and writes
// its memory and globals to dir.
func (d *Driver) capture(ctx context.Context, spec sandbox.Spec, m *wasmbin.Module, mod *program, dir string) (snapshotMeta, error) {
	var stdout, stderr bytes.Buffer
	// Real randomness: the runtime seeds its hash maps and math/rand
	// from it here, once for every instance. wazero's default source is a
	// fixed sequence, which would make those seeds the same in every
	// deployment and predictable from the binary alone.
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions().
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithRandSource(rand.Reader).
		WithStdout(&stdout).WithStderr(&stderr).
		WithArgs(append([]string{spec.Name}, spec.Args...)...)
	env, err := newEnviron(spec.Env)
	if err != nil {
		return snapshotMeta{}, err
	}
	ictx, cancel := context.WithTimeout(withEnviron(ctx, env), initTimeout)
	defer cancel()
	mem := &memoryLimit{limit: uint64(spec.MemoryMB) << 20}
	defer mem.free()
	inst, err := mod.instantiate(experimental.WithMemoryAllocator(ictx, mem), cfg)
	if err != nil {
		return snapshotMeta{}, initError(ictx, err, mem, &stderr)
	}
	defer inst.Close(context.Background())
	memory := inst.Memory()
	if memory == nil {
		return snapshotMeta{}, fmt.Errorf("module has no memory: %w", wasmbin.ErrUnsupported)
	}
	// The snapshot module's data segments are passive: write the active
	// ones where instantiation would have.
	for i, seg := range m.Data {
		if seg.Active && !memory.Write(seg.Offset, seg.Bytes) {
			return snapshotMeta{}, fmt.Errorf("data segment %d does not fit in memory: %w", i, errdefs.ErrInvalidArgument)
		}
	}
	if _, err := callGuest(ictx, inst, inst.ExportedFunction(exportInitialize)); err != nil {
		return snapshotMeta{}, initError(ictx, err, mem, &stderr)
	}
	meta := snapshotMeta{Format: snapshotFormat, MemorySize: uint64(memory.Size())}
	for _, g := range m.Globals {
		eg := inst.ExportedGlobal(g.Export)
		if eg == nil {
			return snapshotMeta{}, fmt.Errorf("global %s not exported: %w", g.Export, wasmbin.ErrUnsupported)
		}
		meta.Globals = append(meta.Globals, globalValue{Export: g.Export, Value: eg.Get()})
	}
	image, ok := memory.Read(0, memory.Size())
	if !ok {
		return snapshotMeta{}, errors.New("wasm: read memory for snapshot")
	}
	if err := writeSnapshot(dir, image, meta); err != nil {
		return snapshotMeta{}, err
	}
	return meta, nil
}

func initError(ctx context.Context, err error, mem *memoryLimit, stderr *bytes.Buffer) error {
	msg := classify(ctx, err, mem, "initialize").Error()
	if s := bytes.TrimSpace(stderr.Bytes()); len(s) > 0 {
		if len(s) > 2048 {
			s = s[len(s)-2048:]
		}
		msg += "; stderr: " + string(s)
	}
	return fmt.Errorf("initialization failed: %s: %w", msg, errdefs.ErrInvalidArgument)
}

// writeSnapshot writes the image and metadata atomically: into a temporary
// directory renamed into place.
func writeSnapshot(dir string, image []byte, meta snapshotMeta) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("wasm: snapshot dir: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-*")
	if err != nil {
		return fmt.Errorf("wasm: snapshot dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "memory"), image, 0o444); err != nil {
		return fmt.Errorf("wasm: write snapshot image: %w", err)
	}
	b, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(tmp, "meta.json"), b, 0o444); err != nil {
		return fmt.Errorf("wasm: write snapshot meta: %w", err)
	}
	os.RemoveAll(dir) // a stale or corrupt snapshot
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("wasm: commit snapshot: %w", err)
	}
	return nil
}
