// Package trace reads serverless invocation traces and generates synthetic
// ones, all as one common form: a slice of Invocation sorted by arrival.
//
// Readers cover the two public Azure Functions traces (Microsoft's
// AzurePublicDataset): the 2019 per-minute counts of "Serverless in the
// Wild" (ReadAzure2019, LoadAzure2019) and the 2021 per-invocation trace
// (ReadAzure2021, LoadAzure2021). Synthetic generates seeded bursty traffic.
// Every reader is deterministic: the same input and options give the same
// invocations.
package trace

import (
	"cmp"
	"encoding/csv"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
)

// Invocation is one request in a trace.
type Invocation struct {
	Function string
	Arrival  time.Duration // since the start of the trace
	Duration time.Duration // execution time
	MemoryMB int
}

// Sort orders invocations by arrival; ties keep their order.
func Sort(invs []Invocation) {
	slices.SortStableFunc(invs, func(a, b Invocation) int { return cmp.Compare(a.Arrival, b.Arrival) })
}

// Summary describes a trace.
type Summary struct {
	Invocations int
	Functions   int
	Span        time.Duration // from the first arrival to the last completion
	BusySeconds float64       // total execution time
}

// Summarize computes a Summary.
func Summarize(invs []Invocation) Summary {
	s := Summary{Invocations: len(invs)}
	if len(invs) == 0 {
		return s
	}
	seen := make(map[string]struct{})
	first, last := invs[0].Arrival, time.Duration(0)
	for _, inv := range invs {
		seen[inv.Function] = struct{}{}
		first = min(first, inv.Arrival)
		last = max(last, inv.Arrival+inv.Duration)
		s.BusySeconds += inv.Duration.Seconds()
	}
	s.Functions = len(seen)
	s.Span = last - first
	return s
}

// rngFor returns a generator that depends only on seed and key, so results
// do not depend on the order in which functions are read.
func rngFor(seed uint64, key string) *rand.Rand {
	h := fnv.New64a()
	io.WriteString(h, key)
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// csvTable is a CSV file with a header, read whole.
type csvTable struct {
	name   string
	header map[string]int
	cols   []string
	rows   [][]string
}

func readCSV(name string, r io.Reader, required ...string) (*csvTable, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	records, err := cr.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(records) == 0 {
		return nil, fmt.Errorf("%s: empty file", name)
	}
	t := &csvTable{name: name, header: make(map[string]int), cols: records[0], rows: records[1:]}
	for i, c := range t.cols {
		t.header[c] = i
	}
	for _, c := range required {
		if _, ok := t.header[c]; !ok {
			return nil, fmt.Errorf("%s: missing column %q", name, c)
		}
	}
	for i, row := range t.rows {
		if len(row) != len(t.cols) {
			return nil, fmt.Errorf("%s: line %d has %d fields, header has %d", name, i+2, len(row), len(t.cols))
		}
	}
	return t, nil
}

func (t *csvTable) float(row []string, line int, col string) (float64, error) {
	v, err := strconv.ParseFloat(row[t.header[col]], 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%s: line %d: column %s: bad number %q", t.name, line, col, row[t.header[col]])
	}
	return v, nil
}

func millis(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }
