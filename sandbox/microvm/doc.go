// Package microvm is kindling's microVM sandbox: each function instance is
// a Linux guest under QEMU (-machine microvm), running the kindling agent
// as its init and the function as a static linux/amd64 executable.
//
// A guest boots a kernel extracted from the host's /boot/vmlinuz-* and an
// initramfs written in Go: the agent as /init, the function as /fn, and
// the virtio modules its channel needs. The agent talks to the daemon over
// a virtio-serial port (the agent protocol of package agent) and the
// daemon watches the serial console; both are socketpairs handed to QEMU,
// so readiness is read from the channel, never polled.
//
// Starting an instance by booting takes seconds under software emulation.
// Instead, a function is prepared by booting one template VM whose RAM is
// a file (memory-backend-file, share=on), waiting for its agent, and
// saving its device state with x-ignore-shared, so the state file holds
// devices and CPUs only and the memory file is the RAM: the Kata
// Containers recipe. Each instance is a clone: a new QEMU mapping the
// template's memory file privately (copy-on-write, share=off), restoring
// the device state with -incoming and resuming. Clones of one template run
// concurrently and see nothing of each other. The agent re-announces
// readiness to each clone: the template is saved with the host side of
// the port closed, and a port that reopens wakes the agent's pending
// readiness write.
//
// The first invocation after a restore can record which pages of the
// memory file it needed: a REAP working set (the pages the clone's QEMU
// has mapped, read from /proc/PID/pagemap) or a FaaSnap loading set (pages
// that became resident in the page cache, by mincore scans). Both are kept
// with the snapshot in a compact file, and later restores prefetch them.
//
// Driver implements sandbox.Driver; Manager is the snapshot API (VMs,
// snapshots, loading and working sets, invocations from a snapshot) that
// the daemon exposes over HTTP. See docs/microvm.md.
package microvm
