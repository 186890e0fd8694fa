// Command kindling is the kindling daemon and its command line.
package main

import (
	"os"

	"github.com/kindling-dev/kindling/cli"
)

func main() { os.Exit(cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
