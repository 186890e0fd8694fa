// Command gocounter is an SDK function for snapshot tests: its state is set
// in init (counter = 41, a heap map with one entry, the variable INIT of
// the environment init ran in), and every request increments the counter
// and adds to the map. Restored from the snapshot, every instance answers
// "counter=42 map=2 init=<INIT> env=<GREETING> body=<body>". The body
// "seed" gets instead a number math/rand drew at init.
package main

import (
	"fmt"
	"math/rand/v2"
	"os"

	kindling "github.com/kindling-dev/kindling/sdk/go"
)

var (
	counter int
	seen    map[string]int
	initEnv = os.Getenv("INIT") // read once, at deploy: it is in the snapshot
	seed    = rand.Uint64()     // from the runtime's seed, drawn at deploy
)

func init() {
	counter = 41
	seen = map[string]int{"init": 1}
	kindling.Handle(func(r *kindling.Request) (*kindling.Response, error) {
		if string(r.Body) == "seed" {
			return kindling.Text(200, fmt.Sprint(seed)), nil
		}
		counter++
		seen[string(r.Body)]++
		if string(r.Body) == "fail" {
			return nil, fmt.Errorf("asked to fail")
		}
		return kindling.Text(200, fmt.Sprintf("counter=%d map=%d init=%s env=%s body=%s", counter, len(seen), initEnv, r.Getenv("GREETING"), r.Body)), nil
	})
}

func main() { kindling.Main() }
