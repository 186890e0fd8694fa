package trace

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
)

// Spread says how a minute's invocation count is placed within the minute.
type Spread int

// Spreads.
const (
	SpreadEven   Spread = iota // k-th of n invocations at k/n of the minute
	SpreadRandom               // uniformly at random (seeded per function)
)

// DurationMode says how execution times are derived from durations.csv.
type DurationMode int

// Duration modes.
const (
	DurationAverage DurationMode = iota // every invocation takes the function's average
	DurationSampled                     // drawn (seeded) from the function's percentiles
)

// Azure2019Options tunes ReadAzure2019. The zero value spreads evenly and
// uses average durations.
type Azure2019Options struct {
	Spread    Spread
	Durations DurationMode
	Seed      uint64 // for SpreadRandom and DurationSampled
	// Minutes, if > 0, keeps only the first Minutes minute columns.
	Minutes int
	// DefaultMemoryMB applies to functions missing from memory.csv (default 128).
	DefaultMemoryMB int
	// DefaultDuration applies to functions missing from durations.csv (default 1s).
	DefaultDuration time.Duration
	// MaxInvocations refuses traces that would expand to more invocations
	// (default 100,000,000; the full 14-day trace needs about 12 billion).
	MaxInvocations int
}

// Azure 2019 column names.
const (
	colOwner    = "HashOwner"
	colApp      = "HashApp"
	colFunction = "HashFunction"
	colTrigger  = "Trigger"
)

// durationPercentiles are the percentile columns of durations.csv.
var durationPercentiles = []struct {
	p   float64
	col string
}{
	{0, "percentile_Average_0"}, {1, "percentile_Average_1"}, {25, "percentile_Average_25"},
	{50, "percentile_Average_50"}, {75, "percentile_Average_75"}, {99, "percentile_Average_99"},
	{100, "percentile_Average_100"},
}

// LoadAzure2019 reads invocations.csv, and durations.csv and memory.csv when
// present, from dir.
func LoadAzure2019(dir string, opts Azure2019Options) ([]Invocation, error) {
	open := func(name string, optional bool) (io.ReadCloser, error) {
		f, err := os.Open(filepath.Join(dir, name))
		if optional && errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return f, err
	}
	inv, err := open("invocations.csv", false)
	if err != nil {
		return nil, fmt.Errorf("azure 2019 trace: %w", err)
	}
	defer inv.Close()
	dur, err := open("durations.csv", true)
	if err != nil {
		return nil, fmt.Errorf("azure 2019 trace: %w", err)
	}
	mem, err := open("memory.csv", true)
	if err != nil {
		if dur != nil {
			dur.Close()
		}
		return nil, fmt.Errorf("azure 2019 trace: %w", err)
	}
	var durR, memR io.Reader
	if dur != nil {
		defer dur.Close()
		durR = dur
	}
	if mem != nil {
		defer mem.Close()
		memR = mem
	}
	return ReadAzure2019(inv, durR, memR, opts)
}

// ReadAzure2019 reads the Azure Functions 2019 trace format:
//
//   - invocations: HashOwner,HashApp,HashFunction,Trigger,<minute>,... with
//     the number of invocations of each function in each minute;
//   - durations (may be nil): HashOwner,HashApp,HashFunction,Average,Count,
//     Minimum,Maximum,percentile_Average_{0,1,25,50,75,99,100}, in ms;
//   - memory (may be nil): HashOwner,HashApp[,HashFunction],...,
//     AverageAllocatedMb,..., per function when HashFunction is present
//     (as in the vHive samples) and per application otherwise (as in the
//     full trace).
//
// Invocations are named by HashFunction; arrivals count from the first
// minute column. The result is sorted by arrival.
func ReadAzure2019(invocations, durations, memory io.Reader, opts Azure2019Options) ([]Invocation, error) {
	if opts.DefaultMemoryMB <= 0 {
		opts.DefaultMemoryMB = 128
	}
	if opts.DefaultDuration <= 0 {
		opts.DefaultDuration = time.Second
	}
	if opts.MaxInvocations <= 0 {
		opts.MaxInvocations = 100_000_000
	}
	inv, err := readCSV("invocations.csv", invocations, colOwner, colApp, colFunction, colTrigger)
	if err != nil {
		return nil, fmt.Errorf("azure 2019 trace: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	durs, err := readDurations2019(durations)
	if err != nil {
		return nil, fmt.Errorf("azure 2019 trace: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	mems, perFunction, err := readMemory2019(memory)
	if err != nil {
		return nil, fmt.Errorf("azure 2019 trace: %w: %w", err, errdefs.ErrInvalidArgument)
	}

	// Minute columns follow Trigger; their labels are minute numbers.
	type minuteCol struct {
		idx    int
		offset time.Duration
	}
	var minutes []minuteCol
	first := -1
	for i := inv.header[colTrigger] + 1; i < len(inv.cols); i++ {
		m, err := strconv.Atoi(inv.cols[i])
		if err != nil {
			return nil, fmt.Errorf("azure 2019 trace: invocations.csv: column %d label %q is not a minute number: %w", i+1, inv.cols[i], errdefs.ErrInvalidArgument)
		}
		if first < 0 {
			first = m
		}
		minutes = append(minutes, minuteCol{i, time.Duration(m-first) * time.Minute})
	}
	if opts.Minutes > 0 && len(minutes) > opts.Minutes {
		minutes = minutes[:opts.Minutes]
	}

	var out []Invocation
	for ri, row := range inv.rows {
		owner, app, fn := row[inv.header[colOwner]], row[inv.header[colApp]], row[inv.header[colFunction]]
		memKey := owner + "/" + app
		if perFunction {
			memKey += "/" + fn
		}
		memMB := opts.DefaultMemoryMB
		if m, ok := mems[memKey]; ok {
			memMB = m
		}
		d, hasDur := durs[owner+"/"+app+"/"+fn]
		rng := rngFor(opts.Seed, fn)
		for _, mc := range minutes {
			n, err := strconv.Atoi(row[mc.idx])
			if err != nil || n < 0 {
				return nil, fmt.Errorf("azure 2019 trace: invocations.csv: line %d, minute column %s: bad count %q: %w", ri+2, inv.cols[mc.idx], row[mc.idx], errdefs.ErrInvalidArgument)
			}
			if n > opts.MaxInvocations-len(out) {
				return nil, fmt.Errorf("azure 2019 trace: more than %d invocations: %w", opts.MaxInvocations, errdefs.ErrInvalidArgument)
			}
			for k := range n {
				var at time.Duration
				if opts.Spread == SpreadRandom {
					at = time.Duration(rng.Int64N(int64(time.Minute)))
				} else {
					at = time.Duration(int64(k) * int64(time.Minute) / int64(n))
				}
				dur := opts.DefaultDuration
				if hasDur {
					dur = d.average
					if opts.Durations == DurationSampled {
						dur = d.sample(rng.Float64())
					}
				}
				out = append(out, Invocation{Function: fn, Arrival: mc.offset + at, Duration: dur, MemoryMB: memMB})
			}
		}
	}
	Sort(out)
	return out, nil
}

// durationDist is one function's execution-time distribution.
type durationDist struct {
	average time.Duration
	pcts    []float64 // ms at durationPercentiles
}

// sample maps u in [0,1) through the piecewise-linear inverse CDF.
func (d durationDist) sample(u float64) time.Duration {
	p := u * 100
	for i := 1; i < len(durationPercentiles); i++ {
		lo, hi := durationPercentiles[i-1], durationPercentiles[i]
		if p <= hi.p {
			f := (p - lo.p) / (hi.p - lo.p)
			return millis(d.pcts[i-1] + f*(d.pcts[i]-d.pcts[i-1]))
		}
	}
	return millis(d.pcts[len(d.pcts)-1])
}

func readDurations2019(r io.Reader) (map[string]durationDist, error) {
	out := make(map[string]durationDist)
	if r == nil {
		return out, nil
	}
	cols := []string{colOwner, colApp, colFunction, "Average"}
	for _, p := range durationPercentiles {
		cols = append(cols, p.col)
	}
	t, err := readCSV("durations.csv", r, cols...)
	if err != nil {
		return nil, err
	}
	for i, row := range t.rows {
		avg, err := t.float(row, i+2, "Average")
		if err != nil {
			return nil, err
		}
		d := durationDist{average: millis(math.Max(avg, 0))}
		for _, p := range durationPercentiles {
			v, err := t.float(row, i+2, p.col)
			if err != nil {
				return nil, err
			}
			d.pcts = append(d.pcts, math.Max(v, 0))
		}
		out[row[t.header[colOwner]]+"/"+row[t.header[colApp]]+"/"+row[t.header[colFunction]]] = d
	}
	return out, nil
}

func readMemory2019(r io.Reader) (mems map[string]int, perFunction bool, err error) {
	mems = make(map[string]int)
	if r == nil {
		return mems, false, nil
	}
	t, err := readCSV("memory.csv", r, colOwner, colApp, "AverageAllocatedMb")
	if err != nil {
		return nil, false, err
	}
	_, perFunction = t.header[colFunction]
	for i, row := range t.rows {
		mb, err := t.float(row, i+2, "AverageAllocatedMb")
		if err != nil {
			return nil, false, err
		}
		key := row[t.header[colOwner]] + "/" + row[t.header[colApp]]
		if perFunction {
			key += "/" + row[t.header[colFunction]]
		}
		mems[key] = max(int(math.Ceil(mb)), 1)
	}
	return mems, perFunction, nil
}
