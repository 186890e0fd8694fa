package microvm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kindling-dev/kindling/api"
)

// Accel is a QEMU accelerator.
type Accel = api.Accel

// The accelerators the driver can use.
const (
	AccelKVM = api.AccelKVM // hardware virtualization through /dev/kvm
	AccelTCG = api.AccelTCG // software emulation: slow, runs anywhere
)

// AccelChoice is the accelerator a host will use and why.
type AccelChoice struct {
	Accel Accel `json:"accel"`
	// Reason says why KVM is not used, when it is not.
	Reason string `json:"reason,omitempty"`
}

var (
	probeMu    sync.Mutex
	probeCache = map[string]AccelChoice{} // by QEMU path
)

// ProbeAccel decides whether QEMU can use KVM on this host, once per
// process and QEMU binary: /dev/kvm must open and answer
// KVM_GET_API_VERSION, must not be a PVM-only host (kvm_pvm runs stock
// guest kernels at emulation speed), and QEMU must start a paused microvm
// with -accel kvm and report KVM enabled. Otherwise it chooses TCG and
// says why.
func ProbeAccel(ctx context.Context, qemu string) AccelChoice {
	probeMu.Lock()
	defer probeMu.Unlock()
	if c, ok := probeCache[qemu]; ok {
		return c
	}
	c := AccelChoice{Accel: AccelKVM}
	if err := probeKVM(ctx, qemu); err != nil {
		c = AccelChoice{Accel: AccelTCG, Reason: err.Error()}
	}
	probeCache[qemu] = c
	return c
}

func probeKVM(ctx context.Context, qemu string) error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("KVM unavailable: %w", err)
	}
	defer f.Close()
	const kvmGetAPIVersion = 0xae00
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil || v != 12 {
		return fmt.Errorf("KVM unavailable: KVM_GET_API_VERSION = %d, %v", v, err)
	}
	if moduleLoaded("kvm_pvm") && !moduleLoaded("kvm_intel") && !moduleLoaded("kvm_amd") {
		return errors.New("/dev/kvm is PVM (kvm_pvm), which runs only PVM-enabled guest kernels at speed")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-machine", "microvm", "-accel", "kvm", "-nodefaults",
		"-no-user-config", "-display", "none", "-S", "-qmp", "stdio")
	cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" +
		`{"execute":"query-kvm"}` + "\n" + `{"execute":"quit"}` + "\n")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("qemu -accel kvm: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var reply struct {
			Return struct {
				Enabled *bool `json:"enabled"`
			} `json:"return"`
		}
		if json.Unmarshal(sc.Bytes(), &reply) == nil && reply.Return.Enabled != nil {
			if !*reply.Return.Enabled {
				return errors.New("qemu reports KVM disabled")
			}
			return nil
		}
	}
	return errors.New("qemu -accel kvm: no answer to query-kvm")
}

func moduleLoaded(name string) bool {
	_, err := os.Stat("/sys/module/" + name)
	return err == nil
}

// hostTSCkHz is the host's TSC frequency, when the CPU says it is
// constant and known. Under TCG the guest's TSC is the host's, and telling
// the guest its frequency (tsc_early_khz) spares it a calibration against
// the emulated PIT that fails, and hangs boot, on a busy host.
func hostTSCkHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	var mhz float64
	var flags string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "cpu MHz":
			if mhz == 0 {
				mhz, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			}
		case "flags":
			if flags == "" {
				flags = " " + v + " "
			}
		}
	}
	for _, f := range []string{"constant_tsc", "nonstop_tsc", "tsc_known_freq"} {
		if !strings.Contains(flags, " "+f+" ") {
			return 0
		}
	}
	return int(mhz * 1000)
}
