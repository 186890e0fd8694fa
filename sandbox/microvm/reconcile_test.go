package microvm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kindling-dev/kindling/errdefs"
)

// childEnv makes the test binary a "daemon" that starts a VM and waits to
// be killed (see TestReconcile_AfterCrash).
const childEnv = "KINDLING_MICROVM_CRASH_CHILD"

// crashChild boots a VM under the root named by childEnv, prints its
// QEMU's pid, and waits forever. Its QEMU gets no parent-death signal, so
// it outlives the child like the QEMU of a daemon killed mid-flight.
func crashChild() int {
	testNoDeathSignal = true
	var cfg Config
	if err := jsonUnmarshal(os.Getenv(childEnv), &cfg); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	m, err := NewManager(context.Background(), cfg)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	vm, err := m.CreateVM(context.Background(), VMConfig{ID: "doomed", Function: filepath.Join(filepath.Dir(cfg.Agent), "hello")})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("pid", vm.PID)
	select {}
}

func TestReconcile_AfterCrash(t *testing.T) {
	cfg := testConfig(t)
	cfgJSON, _ := jsonMarshal(cfg)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+cfgJSON)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	var pid int
	if _, err2 := fmt.Sscanf(line, "pid %d", &pid); err != nil || err2 != nil {
		t.Fatalf("child said %q (%v)", line, err)
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	if !processAlive(pid) {
		t.Fatalf("QEMU %d died with its daemon: nothing left for Reconcile to do", pid)
	}
	if err := Reconcile(cfg.Root); err != nil {
		t.Fatal(err)
	}
	if processAlive(pid) {
		t.Errorf("QEMU %d survived Reconcile", pid)
	}
	checkClean(t, cfg.Root)
}

func TestReconcile_RefusesALiveRoot(t *testing.T) {
	m := newTestManager(t)
	err := Reconcile(m.cfg.Root)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Reconcile of a root in use = %v", err)
	}
	_, err = NewManager(context.Background(), m.cfg)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("a second manager on the same root = %v", err)
	}
}
