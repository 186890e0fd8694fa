// Command kindling-agent runs inside a sandbox (a container or a microVM)
// and serves the daemon's invocations of one function over a stream: a
// unix socket it connects to (--connect), or a character device such as a
// virtio-serial port (--device). See package agent.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/kindling-dev/kindling/agent"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kindling-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	connect := fs.String("connect", "", "unix socket of the daemon to connect to")
	device := fs.String("device", "", "character device to talk over (e.g. /dev/vport0p1)")
	dir := fs.String("dir", "", "working directory of the function")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 1 || (*connect == "") == (*device == "") {
		fmt.Fprintln(stderr, "usage: kindling-agent (--connect SOCKET | --device DEV) [--dir DIR] FUNCTION [ARGS...]")
		return 2
	}
	var conn io.ReadWriteCloser
	var err error
	if *connect != "" {
		conn, err = net.Dial("unix", *connect)
	} else {
		conn, err = os.OpenFile(*device, os.O_RDWR, 0)
	}
	if err != nil {
		fmt.Fprintln(stderr, "kindling-agent:", err)
		return 1
	}
	defer conn.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	runner := &agent.Exec{Path: fs.Arg(0), Args: fs.Args()[1:], Env: os.Environ(), Dir: *dir}
	if err := agent.Serve(ctx, conn, runner); err != nil {
		fmt.Fprintln(stderr, "kindling-agent:", err)
		return 1
	}
	return 0
}
