// Command kindling-agent runs inside a sandbox (a container or a microVM)
// and serves the daemon's invocations of one function over a stream: a
// unix socket it connects to (--connect), or a character device such as a
// virtio-serial port (--device). See package agent.
//
// With --init it is also the PID 1 of a microVM guest (see package
// sandbox/microvm): it mounts /proc, /sys and /dev, loads the kernel
// modules the port needs, waits for the port to appear, and serves every
// host connection in turn — a VM saved as a template with the host
// disconnected announces readiness again to each clone restored from it.
// It writes one line to its stderr (the guest console) when it starts and
// one each time it waits for the host; the daemon watches for them.
//
// As PID 1 (of a container's pid namespace or of a guest), or as a child
// subreaper with --subreaper, it reaps every child: a function's orphaned
// descendants are re-parented to it and would otherwise stay zombies. One
// loop (agent.Reaper) waits for any child and hands the status of each
// function process to the request that started it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kindling-dev/kindling/agent"
)

// Console lines of --init mode, matched by package sandbox/microvm.
const (
	initStartedLine = "kindling-agent: init"
	waitingLine     = "kindling-agent: waiting for the host"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kindling-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	connect := fs.String("connect", "", "unix socket of the daemon to connect to")
	device := fs.String("device", "", "character device to talk over (e.g. /dev/vport0p1)")
	dir := fs.String("dir", "", "working directory of the function")
	initMode := fs.Bool("init", false, "run as PID 1 of a microVM guest: mount /proc, /sys and /dev, load --modules, wait for --device, serve each host connection in turn")
	modules := fs.String("modules", "", "with --init: a directory of kernel modules (*.ko) to load in name order")
	subreaper := fs.Bool("subreaper", false, "become a child subreaper and reap orphaned descendants, as PID 1 always does")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 1 || (*connect == "") == (*device == "") || (*initMode && *device == "") {
		fmt.Fprintln(stderr, "usage: kindling-agent (--connect SOCKET | --device DEV) [--init [--modules DIR]] [--subreaper] [--dir DIR] FUNCTION [ARGS...]")
		return 2
	}
	if *initMode {
		fmt.Fprintln(stderr, initStartedLine)
		if err := setUpGuest(*modules, *device); err != nil {
			fmt.Fprintln(stderr, "kindling-agent: init:", err)
			return 1
		}
	}
	var reaper *agent.Reaper
	if os.Getpid() == 1 || *subreaper {
		if os.Getpid() != 1 {
			if err := agent.BecomeSubreaper(); err != nil {
				fmt.Fprintln(stderr, "kindling-agent:", err)
				return 1
			}
		}
		reaper = agent.NewReaper()
		defer reaper.Close()
	}
	var conn io.ReadWriteCloser
	var err error
	if *connect != "" {
		conn, err = net.Dial("unix", *connect)
	} else {
		conn, err = openPort(*device)
	}
	if err != nil {
		fmt.Fprintln(stderr, "kindling-agent:", err)
		return 1
	}
	defer conn.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	runner := &agent.Exec{Path: fs.Arg(0), Args: fs.Args()[1:], Env: os.Environ(), Dir: *dir, Reaper: reaper}
	if *initMode {
		return serveEachConnection(ctx, conn, runner, stderr)
	}
	if err := agent.Serve(ctx, conn, runner); err != nil {
		fmt.Fprintln(stderr, "kindling-agent:", err)
		return 1
	}
	return 0
}

// setUpGuest does what an init does before the agent can serve in a
// microVM: mount the kernel's filesystems, load the port's drivers and wait
// (on inotify, not by polling) for the port's device node.
func setUpGuest(modules, device string) error {
	for _, m := range []struct{ fstype, dir string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount(m.fstype, m.dir, m.fstype, 0, ""); err != nil && !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	in, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	defer syscall.Close(in)
	if _, err := syscall.InotifyAddWatch(in, filepath.Dir(device), syscall.IN_CREATE); err != nil {
		return fmt.Errorf("watch %s: %w", filepath.Dir(device), err)
	}
	if modules != "" {
		kos, _ := filepath.Glob(filepath.Join(modules, "*.ko"))
		sort.Strings(kos)
		for _, ko := range kos {
			if err := loadModule(ko); err != nil {
				return err
			}
		}
	}
	buf := make([]byte, 4096)
	for {
		if _, err := os.Stat(device); err == nil {
			return nil
		}
		if _, err := syscall.Read(in, buf); err != nil && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("waiting for %s: %w", device, err)
		}
	}
}

// openPort opens a virtio-serial port's device. The kernel creates the
// node before it lists the port, and an open in between fails with ENXIO
// (virtio_console's open looks the port up by device number), so that
// error is retried for a while.
func openPort(device string) (*os.File, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, err := os.OpenFile(device, os.O_RDWR, 0)
		if !errors.Is(err, syscall.ENXIO) || time.Now().After(deadline) {
			return f, err
		}
		time.Sleep(time.Millisecond)
	}
}

// loadModule loads a kernel module with finit_module(2); one already
// loaded (or built in) is fine.
func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		// The Go runtime's preemption signals can interrupt the load.
		err = unix.FinitModule(int(f.Fd()), "", 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	return nil
}

// serveEachConnection serves the host until it hangs up, then waits for it
// to connect again and announces readiness anew: a virtio-serial port
// reads end-of-file while the host side is closed, and a write blocks until
// it reopens. It returns only when the port itself fails.
func serveEachConnection(ctx context.Context, conn io.ReadWriter, runner agent.Runner, stderr io.Writer) int {
	for ctx.Err() == nil {
		fmt.Fprintln(stderr, waitingLine)
		err := agent.Serve(ctx, conn, runner)
		var errno syscall.Errno
		if errors.As(err, &errno) {
			fmt.Fprintln(stderr, "kindling-agent:", err)
			return 1
		}
		if err != nil {
			fmt.Fprintln(stderr, "kindling-agent:", err)
		}
	}
	return 0
}
