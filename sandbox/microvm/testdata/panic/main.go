// Command panic crashes the guest kernel (sysrq "c").
package main

import "os"

func main() {
	os.WriteFile("/proc/sysrq-trigger", []byte("c"), 0)
	select {}
}
