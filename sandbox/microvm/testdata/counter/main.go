// Command counter is a conformance fixture: it increments two counters
// kept in the guest's filesystem (tmpfs /tmp and the initramfs root) and
// prints both. A fresh instance prints "11"; the same instance again
// prints "22".
package main

import (
	"fmt"
	"os"
	"strconv"
)

func bump(path string) int {
	b, _ := os.ReadFile(path)
	n, _ := strconv.Atoi(string(b))
	n++
	if err := os.WriteFile(path, []byte(strconv.Itoa(n)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return n
}

func main() { fmt.Printf("%d%d", bump("/tmp/counter"), bump("/counter")) }
