// Command pagerank runs the PageRank power iteration on a generated directed
// graph. The result is the SHA-256 digest of the IEEE 754 bits of the final
// ranks, which are bit-identical on every target because the sums run in a
// fixed order and every product is explicitly rounded. KINDLING_SIZE is the
// number of nodes (small: 20000, medium: 200000, large: 1000000); each node
// has 1 to 15 out-edges and 20 iterations are run.
package main

import (
	"encoding/binary"
	"math"
	"math/rand/v2"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

const (
	name       = "pagerank"
	damping    = 0.85
	iterations = 20
)

// graph stores incoming edges in compressed sparse row form: the sources of
// the edges into node v are src[start[v]:start[v+1]].
type graph struct {
	start  []int32
	src    []int32
	outDeg []int32
}

func init() { harness.Register("pagerank", run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	n := harness.Size(name, 20000, 200000, 1000000)
	g := generate(n)

	rank := make([]float64, n)
	next := make([]float64, n)
	contrib := make([]float64, n)
	for v := range rank {
		rank[v] = 1 / float64(n)
	}
	base := (1 - damping) / float64(n)
	for range iterations {
		for u, r := range rank {
			contrib[u] = r / float64(g.outDeg[u])
		}
		for v := range next {
			var s float64
			for _, u := range g.src[g.start[v]:g.start[v+1]] {
				s += contrib[u]
			}
			next[v] = base + float64(damping*s)
		}
		rank, next = next, rank
	}

	// Every node has an out-edge, so the ranks must still sum to one.
	var total float64
	buf := make([]byte, 0, 8*n)
	for _, r := range rank {
		total += r
		buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(r))
	}
	if math.Abs(total-1) > 1e-9 {
		harness.Fail(name, "ranks do not sum to one")
	}
	harness.Emit(name, harness.Digest(buf))
}

// generate builds a random graph of n nodes from a fixed-seed PRNG, with
// targets skewed towards low node ids so that ranks differ markedly.
func generate(n int) *graph {
	rng := rand.New(rand.NewPCG(13, 14))
	g := &graph{start: make([]int32, n+1), outDeg: make([]int32, n)}
	var edges [][2]int32
	for u := range n {
		deg := 1 + rng.IntN(15)
		g.outDeg[u] = int32(deg)
		for range deg {
			// The square of a uniform variate favours small ids.
			f := rng.Float64()
			v := int(float64(f*f) * float64(n))
			edges = append(edges, [2]int32{int32(u), int32(v)})
			g.start[v+1]++
		}
	}
	for v := range n {
		g.start[v+1] += g.start[v]
	}
	g.src = make([]int32, len(edges))
	fill := append([]int32(nil), g.start[:n]...)
	for _, e := range edges {
		g.src[fill[e[1]]] = e[0]
		fill[e[1]]++
	}
	return g
}
