package microvm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
)

func phaseNames(ts []phase.Timing) []phase.Name {
	var names []phase.Name
	for _, t := range ts {
		names = append(names, t.Name)
	}
	return names
}

// TestManager_SnapshotLifecycle walks the snapshot API the way the
// FaaSnap and REAP rigs do: boot a VM, invoke it, snapshot it, restore
// from the snapshot recording loading and working sets, restore again
// with each prefetch mode, copy, edit page sets, delete.
func TestManager_SnapshotLifecycle(t *testing.T) {
	m := newTestManager(t)
	ctx := timeout(t, 4*time.Minute)
	counter := filepath.Join(binaries(t), "counter")

	vm, err := m.CreateVM(ctx, VMConfig{ID: "boot1", Function: counter})
	if err != nil {
		t.Fatal(err)
	}
	if !vm.Snapshottable || vm.State != "running" || !slices.Contains(phaseNames(vm.Start), PhaseBoot) {
		t.Fatalf("booted vm = %+v", vm)
	}
	for _, want := range []string{"11", "22"} { // state lives on within a VM
		res, err := m.Invoke(ctx, "boot1", InvokeRequest{})
		if err != nil || string(res.Stdout) != want {
			t.Fatalf("invoke = %q, %v; want %q", res.Stdout, err, want)
		}
	}
	snap, err := m.CreateSnapshot(ctx, "boot1", "warm")
	if err != nil {
		t.Fatal(err)
	}
	if snap.MemoryMB != 128 || snap.StateBytes == 0 || snap.Template {
		t.Fatalf("snapshot = %+v", snap)
	}
	if _, err := m.VM("boot1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the snapshotted VM still exists: %v", err)
	}

	t.Run("RecordSets", func(t *testing.T) {
		res, err := m.InvokeSnapshot(ctx, "warm", InvokeRequest{}, RestoreOptions{
			DropCache: true, RecordLoadingSet: true, RecordWorkingSet: true,
		})
		if err != nil || string(res.Stdout) != "33" {
			t.Fatalf("invoke from snapshot = %q, %v; want %q (the state at snapshot time)", res.Stdout, err, "33")
		}
		names := phaseNames(res.Phases)
		for _, want := range []phase.Name{phase.Instantiate, phase.Restore, PhaseAgentReady, phase.Run} {
			if !slices.Contains(names, want) {
				t.Errorf("phase %s missing from %v", want, names)
			}
		}
		info, _ := m.Snapshot("warm")
		if info.LoadingSetPages == 0 || info.WorkingSetPages == 0 {
			t.Fatalf("sets not recorded: %+v", info)
		}
		t.Logf("loading set %d pages, working set %d pages", info.LoadingSetPages, info.WorkingSetPages)
		if len(m.VMs()) != 0 {
			t.Errorf("VMs left after InvokeSnapshot: %+v", m.VMs())
		}
	})
	t.Run("Prefetch", func(t *testing.T) {
		for _, p := range []Prefetch{PrefetchNone, PrefetchLoadingSet, PrefetchWorkingSet} {
			if err := m.DropSnapshotCache("warm"); err != nil {
				t.Fatal(err)
			}
			if info, _ := m.Snapshot("warm"); info.CachedBytes > 32<<20 {
				t.Errorf("after dropping the cache, %d bytes of the snapshot are still cached", info.CachedBytes)
			}
			res, err := m.InvokeSnapshot(ctx, "warm", InvokeRequest{}, RestoreOptions{Prefetch: p})
			if err != nil || string(res.Stdout) != "33" {
				t.Fatalf("%s: %q, %v", p, res.Stdout, err)
			}
			if has := slices.Contains(phaseNames(res.Phases), PhasePrefetch); has != (p != PrefetchNone) {
				t.Errorf("%s: phases %v", p, res.Phases)
			}
			t.Logf("%s: %v", p, res.Phases)
		}
	})
	t.Run("ConcurrentClones", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				vm, err := m.CreateVM(ctx, VMConfig{Snapshot: "warm", Prefetch: PrefetchWorkingSet})
				if err != nil {
					errs <- err
					return
				}
				defer m.DeleteVM(ctx, vm.ID)
				for _, want := range []string{"33", "44"} {
					res, err := m.Invoke(ctx, vm.ID, InvokeRequest{})
					if err != nil || string(res.Stdout) != want {
						errs <- errors.New(vm.ID + ": got " + string(res.Stdout) + ", want " + want)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("RestoredVMIsNotSnapshottable", func(t *testing.T) {
		vm, err := m.CreateVM(ctx, VMConfig{Snapshot: "warm"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.CreateSnapshot(ctx, vm.ID, "nope"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("snapshot of a clone = %v, want ErrFailedPrecondition", err)
		}
		if _, err := m.Snapshot("nope"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("failed snapshot left behind: %v", err)
		}
	})
	t.Run("CopyAndSets", func(t *testing.T) {
		c, err := m.CopySnapshot(ctx, "warm", "warm-copy")
		if err != nil {
			t.Fatal(err)
		}
		orig, _ := m.Snapshot("warm")
		if c.WorkingSetPages != orig.WorkingSetPages || c.LoadingSetPages != orig.LoadingSetPages {
			t.Fatalf("copy %+v lost the sets of %+v", c, orig)
		}
		ws, err := m.WorkingSet("warm-copy")
		if err != nil {
			t.Fatal(err)
		}
		half := PageSet{PageSize: ws.PageSize, Extents: ws.Extents[:len(ws.Extents)/2]}
		if err := m.PutWorkingSet("warm-copy", half); err != nil {
			t.Fatal(err)
		}
		if got, _ := m.WorkingSet("warm-copy"); got.Pages() != half.Pages() {
			t.Fatalf("put %d pages, got %d", half.Pages(), got.Pages())
		}
		bad := PageSet{PageSize: ws.PageSize, Extents: []Extent{{Start: 1 << 40, Pages: 1}}}
		if err := m.PutLoadingSet("warm-copy", bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("put an out-of-range set = %v, want ErrInvalidArgument", err)
		}
		if err := m.PutLoadingSet("warm-copy", PageSet{}); err != nil {
			t.Fatal(err)
		}
		if info, _ := m.Snapshot("warm-copy"); info.LoadingSetPages != 0 {
			t.Fatalf("loading set not removed: %+v", info)
		}
	})
	t.Run("Corrupt", func(t *testing.T) {
		cases := map[string]func(dir string) error{
			"state header": func(dir string) error {
				return os.WriteFile(filepath.Join(dir, fileState), []byte("not a state"), 0o644)
			},
			"state body": func(dir string) error {
				return os.WriteFile(filepath.Join(dir, fileState), append([]byte("QEVM\x00\x00\x00\x03"), make([]byte, 4096)...), 0o644)
			},
			"memory size": func(dir string) error { return os.Truncate(filepath.Join(dir, fileMem), 4096) },
			"working set": func(dir string) error {
				return os.WriteFile(filepath.Join(dir, fileWorking), []byte("KPS1garbage"), 0o644)
			},
		}
		for name, corrupt := range cases {
			t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
				id := "bad-" + strings.ReplaceAll(name, " ", "-")
				if _, err := m.CopySnapshot(ctx, "warm", id); err != nil {
					t.Fatal(err)
				}
				defer m.DeleteSnapshot(ctx, id)
				if err := corrupt(filepath.Join(m.cfg.Root, dirSnapshots, id)); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				_, err := m.InvokeSnapshot(timeout(t, 30*time.Second), id, InvokeRequest{}, RestoreOptions{Prefetch: PrefetchWorkingSet})
				if err == nil {
					t.Fatal("a corrupt snapshot restored")
				}
				if !errors.Is(err, ErrCorruptSnapshot) {
					t.Errorf("error does not wrap ErrCorruptSnapshot: %v", err)
				}
				t.Logf("%v after %v", firstLine(err), time.Since(start))
				if len(m.VMs()) != 0 {
					t.Errorf("VMs left: %+v", m.VMs())
				}
			})
		}
	})
	t.Run("SurvivesRestart", func(t *testing.T) {
		cfg := m.cfg
		if err := m.Close(ctx); err != nil {
			t.Fatal(err)
		}
		m2, err := NewManager(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer m2.Close(ctx)
		res, err := m2.InvokeSnapshot(ctx, "warm-copy", InvokeRequest{}, RestoreOptions{Prefetch: PrefetchWorkingSet})
		if err != nil || string(res.Stdout) != "33" {
			t.Fatalf("after a restart: %q, %v", res.Stdout, err)
		}
		if err := m2.DeleteSnapshot(ctx, "warm"); err != nil {
			t.Fatal(err)
		}
		if _, err := m2.Snapshot("warm"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("deleted snapshot: %v", err)
		}
	})
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// TestManager_BadGuests: a function that crashes the guest kernel, and
// one that halts it so the agent never answers; both VMs end up destroyed.
func TestManager_BadGuests(t *testing.T) {
	m := newTestManager(t)
	ctx := timeout(t, 3*time.Minute)
	for _, tc := range []struct {
		fixture string
		kind    errdefs.Kind
	}{
		{"panic", errdefs.KindCrash},
		{"halt", errdefs.KindTimeout},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			vm, err := m.CreateVM(ctx, VMConfig{Function: filepath.Join(binaries(t), tc.fixture)})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = m.Invoke(ctx, vm.ID, InvokeRequest{TimeoutMs: 1000})
			fe, ok := errdefs.AsFunctionError(err)
			if !ok || fe.Kind != tc.kind {
				t.Fatalf("invoke = %v, want a FunctionError of kind %s", err, tc.kind)
			}
			t.Logf("%s after %v", firstLine(err), time.Since(start))
			if tc.kind == errdefs.KindTimeout && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("timeout does not wrap context.DeadlineExceeded")
			}
			if processAlive(vm.PID) {
				t.Errorf("QEMU %d still runs", vm.PID)
			}
			if info, _ := m.VM(vm.ID); info.State != "stopped" {
				t.Errorf("vm state = %q, want stopped", info.State)
			}
			if err := m.DeleteVM(ctx, vm.ID); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}
