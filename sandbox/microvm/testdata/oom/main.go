// Command oom is a conformance fixture: it allocates and touches memory
// until the guest kernel kills it.
package main

import "os"

func main() {
	var hold [][]byte
	for {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		hold = append(hold, b)
		if len(hold) > 64<<10 { // 64 GiB: never, in a test VM
			os.Exit(0)
		}
	}
}
