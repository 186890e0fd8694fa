// Command exit is a conformance fixture: it complains and exits with 3.
package main

import "os"

func main() {
	os.Stderr.WriteString("bad request\n")
	os.Exit(3)
}
