// Command probe reports what a container sees, for the shim's end-to-end
// tests: its arguments, one environment variable, and the files named by
// its arguments, then exits with the code in $PROBE_EXIT.
package main

import (
	"fmt"
	"os"
	"strconv"
)

func main() {
	fmt.Printf("args=%q\n", os.Args[1:])
	fmt.Printf("PROBE=%s\n", os.Getenv("PROBE"))
	for _, name := range os.Args[1:] {
		b, err := os.ReadFile(name)
		if err != nil {
			fmt.Printf("%s: error: %v\n", name, err)
			continue
		}
		fmt.Printf("%s: %s\n", name, b)
	}
	fmt.Fprintln(os.Stderr, "probe done")
	code, _ := strconv.Atoi(os.Getenv("PROBE_EXIT"))
	os.Exit(code)
}
