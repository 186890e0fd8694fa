package microvm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindling-dev/kindling/errdefs"
)

func TestFindModules(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "kernel/drivers/virtio"), 0o755)
	os.MkdirAll(filepath.Join(dir, "kernel/drivers/char"), 0o755)
	for _, m := range []string{"virtio/virtio_ring", "virtio/virtio", "virtio/virtio_mmio", "char/virtio_console"} {
		os.WriteFile(filepath.Join(dir, "kernel/drivers", m+".ko"), []byte(m), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(
		"kernel/drivers/virtio/virtio_ring.ko:\n"+
			"kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n"+
			"kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"+
			"kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"), 0o644)
	mods, err := findModules(dir, guestModuleNames)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
	}
	want := "00-virtio_ring.ko 01-virtio.ko 02-virtio_mmio.ko 03-virtio_console.ko"
	if strings.Join(names, " ") != want {
		t.Fatalf("load order %v, want %s", names, want)
	}
	// Built in: nothing to load, even without modules.dep.
	builtin := t.TempDir()
	os.WriteFile(filepath.Join(builtin, "modules.builtin"), []byte("kernel/drivers/virtio/virtio_mmio.ko\nkernel/drivers/char/virtio_console.ko\n"), 0o644)
	if mods, err := findModules(builtin, guestModuleNames); err != nil || len(mods) != 0 {
		t.Fatalf("built-in modules: %v, %v", mods, err)
	}
	if _, err := findModules(t.TempDir(), guestModuleNames); err == nil {
		t.Fatal("missing modules went unnoticed")
	}
}

func TestCheckExecutable(t *testing.T) {
	self, err := os.ReadFile("/proc/self/exe") // the test binary: linux/amd64
	if err != nil {
		t.Skip(err)
	}
	err = checkExecutable(self)
	// A test binary built with cgo is dynamically linked; either way the
	// verdict is about linking, not format.
	if err != nil && !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("checkExecutable(test binary) = %v", err)
	}
	for _, bad := range [][]byte{nil, []byte("#!/bin/sh\n"), []byte("\x7fELF garbage")} {
		if err := checkExecutable(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("checkExecutable(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestGuestCmdline(t *testing.T) {
	tcg := guestCmdline(AccelTCG)
	kernel, init, ok := strings.Cut(tcg, " -- ")
	if !ok || !strings.Contains(kernel, "console=ttyS0") || !strings.Contains(kernel, "tsc=reliable") {
		t.Fatalf("cmdline %q", tcg)
	}
	if !strings.HasPrefix(init, "--init ") || !strings.HasSuffix(init, " "+guestFunction) {
		t.Fatalf("init arguments %q", init)
	}
	if strings.Contains(guestCmdline(AccelKVM), "tsc") {
		t.Error("KVM guests keep their own clock calibration")
	}
}
