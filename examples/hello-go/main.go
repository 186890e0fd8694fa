// Command hello-go is the Go hello-world function, written with the
// kindling Go SDK. Built as a reactor (make examples, or kindling build),
// kindling snapshots it after initialization and starts every invocation
// from the snapshot: no Go runtime start-up per request.
package main

import (
	"strings"

	kindling "github.com/kindling-dev/kindling/sdk/go"
)

func init() {
	kindling.Handle(func(r *kindling.Request) (*kindling.Response, error) {
		name := strings.TrimSpace(string(r.Body))
		if name == "" {
			name = "world"
		}
		greeting := r.Getenv("GREETING")
		if greeting == "" {
			greeting = "Hello"
		}
		return kindling.Text(200, greeting+", "+name+"! (from Go on kindling)\n"), nil
	})
}

func main() { kindling.Main() }
