// Command trap is a conformance fixture: it dies of SIGSEGV.
package main

import (
	"os"
	"syscall"
	"unsafe"
)

func main() {
	// The Go runtime turns SIGSEGV into a panic (exit 2); put the
	// default action back so the signal kills the process.
	var act [4]uintptr // struct sigaction: handler SIG_DFL, no flags, empty mask
	syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(syscall.SIGSEGV), uintptr(unsafe.Pointer(&act[0])), 0, 8, 0, 0)
	syscall.Kill(os.Getpid(), syscall.SIGSEGV)
	select {}
}
