// Command pyaes is a cryptography function modelled on the pyaes benchmark:
// it encrypts a generated buffer with AES-128 in CTR mode, decrypts it again
// and checks the round trip. The result is the SHA-256 digest of the
// ciphertext. KINDLING_SIZE is the buffer size in KiB (small: 256, medium:
// 4096, large: 65536).
package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"math/rand/v2"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

const name = "pyaes"

func init() { harness.Register(name, run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	kib := harness.Size(name, 256, 4096, 65536)

	rng := rand.New(rand.NewPCG(5, 6))
	fill := func(b []byte) { // len(b) is a multiple of 8
		for i := 0; i < len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
		}
	}
	key, iv := make([]byte, 16), make([]byte, aes.BlockSize)
	plain := make([]byte, kib<<10)
	fill(key)
	fill(iv)
	fill(plain)

	block, err := aes.NewCipher(key)
	if err != nil {
		harness.Fail(name, "cipher: "+err.Error())
	}
	sealed := make([]byte, len(plain))
	cipher.NewCTR(block, iv).XORKeyStream(sealed, plain)
	opened := make([]byte, len(sealed))
	cipher.NewCTR(block, iv).XORKeyStream(opened, sealed)
	if !bytes.Equal(opened, plain) {
		harness.Fail(name, "decrypted text differs from the plaintext")
	}
	harness.Emit(name, harness.Digest(sealed))
}
