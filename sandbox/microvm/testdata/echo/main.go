// Command echo is a conformance fixture: it copies stdin to stdout.
package main

import (
	"io"
	"os"
)

func main() { io.Copy(os.Stdout, os.Stdin) }
