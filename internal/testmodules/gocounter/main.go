// Command gocounter is an SDK function for snapshot tests: its state is set
// in init (counter = 41, a heap map with one entry), and every request
// increments the counter and adds to the map. Restored from the snapshot,
// every instance answers "counter=42 map=2 env=<GREETING> body=<body>".
package main

import (
	"fmt"

	kindling "github.com/kindling-dev/kindling/sdk/go"
)

var (
	counter int
	seen    map[string]int
)

func init() {
	counter = 41
	seen = map[string]int{"init": 1}
	kindling.Handle(func(r *kindling.Request) (*kindling.Response, error) {
		counter++
		seen[string(r.Body)]++
		if string(r.Body) == "fail" {
			return nil, fmt.Errorf("asked to fail")
		}
		return kindling.Text(200, fmt.Sprintf("counter=%d map=%d env=%s body=%s", counter, len(seen), r.Getenv("GREETING"), r.Body)), nil
	})
}

func main() { kindling.Main() }
