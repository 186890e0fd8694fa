// Command hello-world is the smallest kindling benchmark function: it greets
// the name given as the request body, or the world when the body is empty.
// It measures the fixed cost of starting a function and has no size knob.
package main

import (
	"strings"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

func init() { harness.Register("hello-world", run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	name := strings.TrimSpace(string(harness.Body("hello-world")))
	if name == "" {
		name = "World"
	}
	harness.Emit("hello-world", "Hello, "+name+"!")
}
