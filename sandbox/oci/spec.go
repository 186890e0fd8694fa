package oci

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/image"
	"github.com/kindling-dev/kindling/sandbox"
)

// Inside the container: the agent, and the socket it connects to, are in
// one read-only bind mount of the instance's agent directory.
const (
	agentDir    = "/run/kindling"
	agentBinary = agentDir + "/agent"
	agentSocket = agentDir + "/agent.sock"
)

const (
	cpuPeriod   = 100_000 // µs: the kernel's default CFS period
	defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// limits are an instance's resource limits.
type limits struct {
	memoryMB int
	cpus     float64
	pids     int64
}

// CPUsFor is the CPU quota of a container of memoryMB: one CPU per GiB,
// at least minCPUs.
func CPUsFor(memoryMB int, minCPUs float64) float64 {
	return max(float64(memoryMB)/1024, minCPUs)
}

// specTemplate builds the runtime spec every instance of a function shares;
// instanceSpec fills in each instance's own paths.
func specTemplate(img *image.Image, fn sandbox.Spec, argv []string, lim limits) (*specs.Spec, error) {
	uid, gid, err := parseUser(img.Config.User)
	if err != nil {
		return nil, err
	}
	cwd := img.Config.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	if !strings.HasPrefix(cwd, "/") {
		return nil, fmt.Errorf("image working directory %q is not absolute: %w", cwd, errdefs.ErrInvalidArgument)
	}
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	memory := int64(lim.memoryMB) << 20
	shares := uint64(max(lim.memoryMB, 2)) // 1024 per GiB, as cpu.shares counts a CPU
	quota := int64(lim.cpus * cpuPeriod)
	period := uint64(cpuPeriod)
	s := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			User: specs.User{UID: uid, GID: gid},
			Args: append([]string{agentBinary, "--connect", agentSocket}, argv...),
			Env:  mergeEnv(img.Config.Env, fn.Env),
			Cwd:  cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024},
				{Type: "RLIMIT_CORE", Hard: 0, Soft: 0},
			},
			NoNewPrivileges: true,
		},
		Hostname: "kindling",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
			},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Memory:  &specs.LinuxMemory{Limit: &memory, Swap: &memory},
				CPU:     &specs.LinuxCPU{Shares: &shares, Quota: &quota, Period: &period},
				Pids:    &specs.LinuxPids{Limit: lim.pids},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
			},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	for _, m := range fn.Mounts {
		if !strings.HasPrefix(m.GuestPath, "/") || !strings.HasPrefix(m.HostPath, "/") {
			return nil, fmt.Errorf("mount %s:%s: paths must be absolute: %w", m.HostPath, m.GuestPath, errdefs.ErrInvalidArgument)
		}
		opts := []string{"rbind", "nosuid", "nodev"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: m.GuestPath, Type: "bind", Source: m.HostPath, Options: opts})
	}
	return s, nil
}

// instanceSpec returns the template's config.json for one instance: its
// agent directory and its cgroup.
func instanceSpec(tmpl *specs.Spec, agentHostDir, cgroupsPath string) ([]byte, error) {
	s := specFor(tmpl, cgroupsPath)
	s.Mounts = append(slices.Clip(tmpl.Mounts), specs.Mount{
		Destination: agentDir, Type: "bind", Source: agentHostDir,
		Options: []string{"bind", "ro", "nosuid", "nodev"},
	})
	return json.Marshal(&s)
}

// specFor returns a copy of the template for one container, in the cgroup
// cgroupsPath. The copy shares the template's slices and Process: replace
// them, never change them in place.
func specFor(tmpl *specs.Spec, cgroupsPath string) specs.Spec {
	s := *tmpl
	linux := *tmpl.Linux
	linux.CgroupsPath = cgroupsPath
	s.Linux = &linux
	return s
}

// parseUser reads an image's "uid[:gid]" user. User names would need the
// image's /etc/passwd; they are not supported.
func parseUser(user string) (uint32, uint32, error) {
	if user == "" {
		return 0, 0, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	uid, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("image user %q: only numeric uid[:gid] users are supported: %w", user, errdefs.ErrInvalidArgument)
	}
	gid := uid
	if hasGroup {
		if gid, err = strconv.ParseUint(g, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("image user %q: only numeric uid[:gid] users are supported: %w", user, errdefs.ErrInvalidArgument)
		}
	}
	return uint32(uid), uint32(gid), nil
}

// mergeEnv returns the image's environment overridden by the function's,
// with a default PATH when neither sets one.
func mergeEnv(imageEnv, fnEnv []string) []string {
	var env []string
	index := map[string]int{}
	for _, kv := range slices.Concat(imageEnv, fnEnv) {
		k, _, _ := strings.Cut(kv, "=")
		if k == "" {
			continue
		}
		if i, ok := index[k]; ok {
			env[i] = kv
			continue
		}
		index[k] = len(env)
		env = append(env, kv)
	}
	if _, ok := index["PATH"]; !ok {
		env = append(env, defaultPath)
	}
	return env
}
