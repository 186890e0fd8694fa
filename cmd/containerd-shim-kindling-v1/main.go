// Command containerd-shim-kindling-v1 is the containerd shim of the
// io.containerd.kindling.v1 runtime: containerd runs it for a task's
// "start" and "delete" actions, and "start" runs the pod's server,
// kindling-shim-server, from the same directory. See package launch,
// package shim and docs/kubernetes.md.
package main

import "github.com/kindling-dev/kindling/shim/launch"

func main() { launch.Run() }
