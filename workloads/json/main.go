// Command json is a serialization function: it generates a document of
// records, serializes it, deserializes it both into typed structs (checking
// the round trip) and into generic values, and serializes those again. The
// result is the SHA-256 digest of the final serialization. KINDLING_SIZE is
// the number of records (small: 400, medium: 4000, large: 40000).
package main

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strconv"

	"github.com/kindling-dev/kindling/workloads/internal/harness"
)

const name = "json"

// Record is one entry of the generated document.
type Record struct {
	ID      int               `json:"id"`
	Name    string            `json:"name"`
	Active  bool              `json:"active"`
	Score   float64           `json:"score"`
	Tags    []string          `json:"tags"`
	Address Address           `json:"address"`
	Attrs   map[string]string `json:"attrs"`
}

// Address is a nested object of a Record.
type Address struct {
	Street string `json:"street"`
	City   string `json:"city"`
	Zip    string `json:"zip"`
}

var words = []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot",
	"golf", "hotel", "india", "juliett", "kilo", "lima", "mike", "november"}

func init() { harness.Register(name, run) }

func main() { harness.Main() }

// run computes the result for one request.
func run() {
	n := harness.Size(name, 400, 4000, 40000)
	doc := generate(n)

	data, err := json.Marshal(doc)
	if err != nil {
		harness.Fail(name, "marshal: "+err.Error())
	}
	var typed []Record
	if err := json.Unmarshal(data, &typed); err != nil {
		harness.Fail(name, "unmarshal: "+err.Error())
	}
	if !reflect.DeepEqual(typed, doc) {
		harness.Fail(name, "typed round trip changed the document")
	}
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil {
		harness.Fail(name, "unmarshal generic: "+err.Error())
	}
	out, err := json.Marshal(generic)
	if err != nil {
		harness.Fail(name, "marshal generic: "+err.Error())
	}
	harness.Emit(name, harness.Digest(out))
}

// generate builds n records from a fixed-seed PRNG.
func generate(n int) []Record {
	rng := rand.New(rand.NewPCG(3, 4))
	word := func() string { return words[rng.IntN(len(words))] }
	doc := make([]Record, n)
	for i := range doc {
		tags := make([]string, 1+rng.IntN(4))
		for j := range tags {
			tags[j] = word()
		}
		doc[i] = Record{
			ID:     i,
			Name:   word() + " " + word(),
			Active: rng.IntN(2) == 1,
			// Quantized so the value survives a decimal round trip exactly.
			Score: float64(rng.IntN(1_000_000)) / 1000,
			Tags:  tags,
			Address: Address{
				Street: strconv.Itoa(1+rng.IntN(999)) + " " + word() + " street",
				City:   word() + "ville",
				Zip:    strconv.Itoa(10000 + rng.IntN(90000)),
			},
			Attrs: map[string]string{"color": word(), "shape": word()},
		}
	}
	return doc
}
