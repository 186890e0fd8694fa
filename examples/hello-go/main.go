// Command hello-go is the Go hello-world function: built with
// GOOS=wasip1 GOARCH=wasm, it greets the name given in the request body
// (or "world").
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	body, _ := io.ReadAll(os.Stdin)
	name := strings.TrimSpace(string(body))
	if name == "" {
		name = "world"
	}
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "Hello"
	}
	fmt.Printf("%s, %s! (from Go on kindling)\n", greeting, name)
}
