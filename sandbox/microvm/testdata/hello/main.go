// Command hello is a conformance fixture: it writes "hello, world\n".
package main

import "os"

func main() { os.Stdout.WriteString("hello, world\n") }
