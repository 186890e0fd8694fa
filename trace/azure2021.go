package trace

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
)

// Azure2021Options tunes ReadAzure2021.
type Azure2021Options struct {
	// MemoryMB is given to every invocation, as the 2021 trace has no
	// memory data (default 128).
	MemoryMB int
}

// LoadAzure2021 reads an Azure Functions 2021 trace file.
func LoadAzure2021(path string, opts Azure2021Options) ([]Invocation, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("azure 2021 trace: %w", err)
	}
	defer f.Close()
	return ReadAzure2021(f, opts)
}

// ReadAzure2021 reads the Azure Functions 2021 per-invocation format,
// app,func,end_timestamp,duration, with both times in seconds from the
// start of the trace. Arrival is end_timestamp - duration (at least 0);
// invocations are named app/func. The result is sorted by arrival.
func ReadAzure2021(r io.Reader, opts Azure2021Options) ([]Invocation, error) {
	if opts.MemoryMB <= 0 {
		opts.MemoryMB = 128
	}
	t, err := readCSV("azure 2021 trace", r, "app", "func", "end_timestamp", "duration")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	out := make([]Invocation, 0, len(t.rows))
	for i, row := range t.rows {
		end, err := t.float(row, i+2, "end_timestamp")
		if err != nil {
			return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
		}
		dur, err := t.float(row, i+2, "duration")
		if err != nil {
			return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
		}
		if dur < 0 || dur > maxSeconds || end < 0 || end > maxSeconds {
			return nil, fmt.Errorf("azure 2021 trace: line %d: times %v, %v outside [0, %v] s: %w", i+2, end, dur, maxSeconds, errdefs.ErrInvalidArgument)
		}
		out = append(out, Invocation{
			Function: row[t.header["app"]] + "/" + row[t.header["func"]],
			Arrival:  seconds(max(end-dur, 0)),
			Duration: seconds(dur),
			MemoryMB: opts.MemoryMB,
		})
	}
	Sort(out)
	return out, nil
}

// maxSeconds bounds trace times (about 31 years) so they fit a time.Duration.
const maxSeconds = 1e9

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
