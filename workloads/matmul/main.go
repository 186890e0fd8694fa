// Command matmul multiplies two generated N×N float64 matrices. The result is
// the SHA-256 digest of the product's IEEE 754 bits, which is identical on
// every target because each product is explicitly rounded before it is
// accumulated (so no fused multiply-add can change it). KINDLING_SIZE is N
// (small: 200, medium: 512, large: 1024).
package main

import (
	"encoding/binary"
	"math"
	"math/rand/v2"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

const name = "matmul"

func init() { harness.Register(name, run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	n := harness.Size(name, 200, 512, 1024)

	rng := rand.New(rand.NewPCG(7, 8))
	a, b := random(rng, n), random(rng, n)
	c := make([]float64, n*n)
	// i-k-j order streams through rows of b and c.
	for i := range n {
		ci := c[i*n : (i+1)*n]
		for k := range n {
			aik := a[i*n+k]
			bk := b[k*n : (k+1)*n]
			for j := range ci {
				ci[j] += float64(aik * bk[j])
			}
		}
	}

	buf := make([]byte, 0, 8*len(c))
	for _, v := range c {
		buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(v))
	}
	harness.Emit(name, harness.Digest(buf))
}

// random returns an n×n row-major matrix with entries in [-1, 1).
func random(rng *rand.Rand, n int) []float64 {
	m := make([]float64, n*n)
	for i := range m {
		m[i] = rng.Float64()*2 - 1
	}
	return m
}
