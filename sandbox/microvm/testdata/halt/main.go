// Command halt halts the guest: the kernel stops, QEMU keeps running, and
// the agent never answers.
package main

import "syscall"

func main() {
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_HALT)
	select {}
}
