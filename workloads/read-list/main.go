// Command read-list generates a large list of integers deterministically,
// then reads it back and sums it. KINDLING_SIZE is the number of elements
// (small: 1 Mi, medium: 4 Mi, large: 16 Mi).
package main

import (
	"math/rand/v2"
	"strconv"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

const name = "read-list"

func init() { harness.Register(name, run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	n := harness.Size(name, 1<<20, 4<<20, 16<<20)

	// Write phase: fill the list from a fixed-seed PRNG.
	rng := rand.New(rand.NewPCG(1, 2))
	list := make([]uint32, n)
	for i := range list {
		list[i] = rng.Uint32()
	}

	// Read phase: sum every element, plus an order-sensitive checksum so a
	// reordered list is detected too.
	var sum, check uint64
	for i, v := range list {
		sum += uint64(v)
		check = (check*31 + uint64(v)) ^ uint64(i)
	}
	harness.Emit(name, strconv.FormatUint(sum, 10)+"-"+strconv.FormatUint(check, 16))
}
