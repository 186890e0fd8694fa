// Command kindling-shim-server is the server of the kindling containerd
// shim: one process per pod, serving containerd's task API and running the
// pod's wasm functions. containerd-shim-kindling-v1 starts it; install it
// in the same directory. See package shim and docs/kubernetes.md.
package main

import "github.com/kindling-dev/kindling/shim"

func main() { shim.Serve() }
