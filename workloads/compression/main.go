// Command compression compresses a generated text-like buffer with gzip,
// decompresses it and verifies the round trip. The result is the SHA-256
// digest of the decompressed data, which does not depend on the exact bytes
// the compressor emits and so stays stable across Go releases.
// KINDLING_SIZE is the input size in KiB (small: 256, medium: 4096, large:
// 65536).
package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

const name = "compression"

var words = []string{"the", "quick", "brown", "fox", "jumps", "over", "lazy",
	"dog", "serverless", "function", "snapshot", "restore", "memory", "page",
	"cold", "start", "warm", "kindling", "sandbox", "wasm"}

func init() { harness.Register(name, run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	kib := harness.Size(name, 256, 4096, 65536)
	input := generate(kib << 10)

	var packed bytes.Buffer
	zw := gzip.NewWriter(&packed)
	if _, err := zw.Write(input); err != nil {
		harness.Fail(name, "compressing: "+err.Error())
	}
	if err := zw.Close(); err != nil {
		harness.Fail(name, "compressing: "+err.Error())
	}

	zr, err := gzip.NewReader(bytes.NewReader(packed.Bytes()))
	if err != nil {
		harness.Fail(name, "decompressing: "+err.Error())
	}
	output, err := io.ReadAll(zr)
	if err != nil {
		harness.Fail(name, "decompressing: "+err.Error())
	}
	if !bytes.Equal(input, output) {
		harness.Fail(name, "round trip mismatch")
	}
	harness.Emit(name, harness.Digest(output))
}

// generate returns n bytes of space-separated words with line breaks, drawn
// from a fixed-seed PRNG so the text compresses like prose.
func generate(n int) []byte {
	rng := rand.New(rand.NewPCG(9, 10))
	buf := make([]byte, 0, n+16)
	for col := 0; len(buf) < n; {
		w := words[rng.IntN(len(words))]
		buf = append(buf, w...)
		if col += len(w) + 1; col > 72 {
			buf = append(buf, '\n')
			col = 0
		} else {
			buf = append(buf, ' ')
		}
	}
	return buf[:n]
}
