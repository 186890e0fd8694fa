package trace

import (
	"cmp"
	"encoding/csv"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/errdefs"
)

// rowSums counts invocations per function straight from an invocations.csv.
func rowSums(t *testing.T, path string) (map[string]int, int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	sums, total := map[string]int{}, 0
	for _, row := range rows[1:] {
		for _, c := range row[4:] {
			n, err := strconv.Atoi(c)
			if err != nil {
				t.Fatal(err)
			}
			sums[row[2]] += n
			total += n
		}
	}
	return sums, total
}

func countByFunction(invs []Invocation) map[string]int {
	m := map[string]int{}
	for _, inv := range invs {
		m[inv.Function]++
	}
	return m
}

func checkSorted(t *testing.T, invs []Invocation) {
	t.Helper()
	if !slices.IsSortedFunc(invs, func(a, b Invocation) int { return cmp.Compare(a.Arrival, b.Arrival) }) {
		t.Fatal("invocations not sorted by arrival")
	}
}

func TestLoadAzure2019_FullSample(t *testing.T) {
	dir := filepath.Join("testdata", "azure2019-100")
	invs, err := LoadAzure2019(dir, Azure2019Options{})
	if err != nil {
		t.Fatal(err)
	}
	sums, total := rowSums(t, filepath.Join(dir, "invocations.csv"))
	if len(invs) != total || total != 339657 {
		t.Fatalf("%d invocations, the CSV counts %d", len(invs), total)
	}
	got := countByFunction(invs)
	for fn, n := range sums {
		if n > 0 && got[fn] != n {
			t.Errorf("%s: %d invocations, the CSV counts %d", fn, got[fn], n)
		}
	}
	checkSorted(t, invs)
	if first, last := invs[0].Arrival, invs[len(invs)-1].Arrival; first < 0 || last >= 480*time.Minute {
		t.Fatalf("arrivals span %v..%v, want within 8h", first, last)
	}
	s := Summarize(invs)
	if s.Functions != 100 || s.Invocations != total {
		t.Fatalf("summary %+v", s)
	}
	// Spot-check one function against durations.csv and memory.csv:
	// 1948876d... averages 71 ms and allocates 14.33 MB on average.
	for _, inv := range invs {
		if strings.HasPrefix(inv.Function, "1948876d67f7") {
			if inv.Duration != 71*time.Millisecond {
				t.Fatalf("duration %v, want 71ms", inv.Duration)
			}
			if inv.MemoryMB <= 0 {
				t.Fatalf("memory %d MB", inv.MemoryMB)
			}
			break
		}
	}
}

func TestReadAzure2019_Small(t *testing.T) {
	dir := filepath.Join("testdata", "azure2019-small")
	open := func(name string) *os.File {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	even, err := ReadAzure2019(open("invocations.csv"), open("durations.csv"), open("memory.csv"), Azure2019Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(even) != 95 {
		t.Fatalf("%d invocations, want 95", len(even))
	}
	checkSorted(t, even)
	// Even spread: a minute with n invocations has them at k/n of the minute.
	perMinute := map[string]map[time.Duration][]time.Duration{}
	for _, inv := range even {
		m := inv.Arrival.Truncate(time.Minute)
		if perMinute[inv.Function] == nil {
			perMinute[inv.Function] = map[time.Duration][]time.Duration{}
		}
		perMinute[inv.Function][m] = append(perMinute[inv.Function][m], inv.Arrival-m)
	}
	for fn, minutes := range perMinute {
		for m, offs := range minutes {
			for k, off := range offs {
				if want := time.Duration(k) * time.Minute / time.Duration(len(offs)); off != want {
					t.Fatalf("%s minute %v: offsets %v", fn[:8], m, offs)
				}
			}
		}
	}

	// Random spread and sampled durations are seeded and deterministic.
	read := func(opts Azure2019Options) []Invocation {
		invs, err := LoadAzure2019(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		return invs
	}
	opts := Azure2019Options{Spread: SpreadRandom, Durations: DurationSampled, Seed: 7}
	a, b := read(opts), read(opts)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different traces")
	}
	opts.Seed = 8
	if c := read(opts); reflect.DeepEqual(a, c) {
		t.Fatal("different seeds, same trace")
	}
	if !reflect.DeepEqual(countByFunction(a), countByFunction(even)) {
		t.Fatal("spreading changed the counts")
	}
	checkSorted(t, a)

	// Without durations.csv and memory.csv, defaults apply.
	bare, err := ReadAzure2019(open("invocations.csv"), nil, nil, Azure2019Options{DefaultMemoryMB: 256, DefaultDuration: 3 * time.Second, Minutes: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, inv := range bare {
		if inv.MemoryMB != 256 || inv.Duration != 3*time.Second || inv.Arrival >= 10*time.Minute {
			t.Fatalf("defaults not applied: %+v", inv)
		}
	}
}

func TestDurationDistSample(t *testing.T) {
	d := durationDist{pcts: []float64{0, 10, 20, 30, 40, 50, 100}}
	for _, tc := range []struct {
		u    float64
		want time.Duration
	}{
		{0, 0},
		{0.01, 10 * time.Millisecond},
		{0.25, 20 * time.Millisecond},
		{0.5, 30 * time.Millisecond},
		{0.995, 75 * time.Millisecond},
	} {
		if got := d.sample(tc.u); got != tc.want {
			t.Errorf("sample(%v) = %v, want %v", tc.u, got, tc.want)
		}
	}
}

func TestReadAzure2019_MemoryPerApp(t *testing.T) {
	inv := "HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f1,http,1,0\no,a,f2,timer,0,2\no,b,f3,http,1,1\n"
	mem := "HashOwner,HashApp,SampleCount,AverageAllocatedMb\no,a,10,100.2\n"
	invs, err := ReadAzure2019(strings.NewReader(inv), nil, strings.NewReader(mem), Azure2019Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Invocation{
		{"f1", 0, time.Second, 101},
		{"f3", 0, time.Second, 128},
		{"f2", time.Minute, time.Second, 101},
		{"f3", time.Minute, time.Second, 128},
		{"f2", time.Minute + 30*time.Second, time.Second, 101},
	}
	if !reflect.DeepEqual(invs, want) {
		t.Fatalf("got %+v\nwant %+v", invs, want)
	}
}

func TestReadAzure2019_Errors(t *testing.T) {
	for _, tc := range []struct{ name, inv, dur, mem string }{
		{"empty", "", "", ""},
		{"missing column", "HashOwner,HashApp,Trigger,1\no,a,http,1\n", "", ""},
		{"bad minute label", "HashOwner,HashApp,HashFunction,Trigger,x\no,a,f,http,1\n", "", ""},
		{"bad count", "HashOwner,HashApp,HashFunction,Trigger,1\no,a,f,http,-1\n", "", ""},
		{"too many", "HashOwner,HashApp,HashFunction,Trigger,1\no,a,f,http,2000000000\n", "", ""},
		{"short row", "HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1\n", "", ""},
		{"bad duration", "HashOwner,HashApp,HashFunction,Trigger,1\no,a,f,http,1\n",
			"HashOwner,HashApp,HashFunction,Average,percentile_Average_0,percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100\no,a,f,NaN,1,1,1,1,1,1,1\n", ""},
		{"memory without column", "HashOwner,HashApp,HashFunction,Trigger,1\no,a,f,http,1\n", "", "HashOwner,HashApp\no,a\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var durR, memR io.Reader // nil unless given
			if tc.dur != "" {
				durR = strings.NewReader(tc.dur)
			}
			if tc.mem != "" {
				memR = strings.NewReader(tc.mem)
			}
			if _, err := ReadAzure2019(strings.NewReader(tc.inv), durR, memR, Azure2019Options{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
	if _, err := LoadAzure2019(t.TempDir(), Azure2019Options{}); err == nil {
		t.Fatal("LoadAzure2019 of an empty directory should fail")
	}
}

func TestLoadAzure2021(t *testing.T) {
	path := filepath.Join("testdata", "azure2021", "invocations.csv")
	invs, err := LoadAzure2021(path, Azure2021Options{MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	if len(invs) != 199 {
		t.Fatalf("%d invocations, want 199", len(invs))
	}
	checkSorted(t, invs)
	if s := Summarize(invs); s.Functions != 31 {
		t.Fatalf("%d functions, want 31", s.Functions)
	}
	// The first data row: end 57.15786004066467, duration 57.154 s.
	found := false
	for _, inv := range invs {
		if strings.HasSuffix(inv.Function, "/337cd24a7d5fd5c92460faee4ebe6a186a0eb322bd17b73da7ffa153025794e1") && inv.Duration == 57154*time.Millisecond {
			found = true
			if inv.Arrival < 3*time.Millisecond || inv.Arrival > 4*time.Millisecond || inv.MemoryMB != 256 {
				t.Fatalf("arrival %v, memory %d", inv.Arrival, inv.MemoryMB)
			}
		}
		if inv.Arrival < 0 || inv.Duration < 0 {
			t.Fatalf("negative times: %+v", inv)
		}
	}
	if !found {
		t.Fatal("known invocation missing")
	}
	for _, bad := range []string{
		"",
		"app,func,end_timestamp\na,f,1\n",
		"app,func,end_timestamp,duration\na,f,x,1\n",
		"app,func,end_timestamp,duration\na,f,1,-1\n",
		"app,func,end_timestamp,duration\na,f,1e300,1\n",
	} {
		if _, err := ReadAzure2021(strings.NewReader(bad), Azure2021Options{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ReadAzure2021(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestSynthetic(t *testing.T) {
	cfg := SyntheticConfig{Seed: 1, Functions: 20, Length: time.Hour}
	a, err := Synthetic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Synthetic(cfg)
	if !reflect.DeepEqual(a, b) || len(a) == 0 {
		t.Fatalf("not deterministic (%d vs %d invocations)", len(a), len(b))
	}
	checkSorted(t, a)
	for _, inv := range a {
		if inv.Arrival < 0 || inv.Arrival >= time.Hour || inv.Duration < 0 || inv.MemoryMB <= 0 {
			t.Fatalf("bad invocation %+v", inv)
		}
	}
	cfg.Seed = 2
	if c, _ := Synthetic(cfg); reflect.DeepEqual(a, c) {
		t.Fatal("different seeds, same trace")
	}
	// Bursts add load: compare with a burst factor of 1 (no bursts).
	cfg.BurstFactor = 1
	cfg.MinRate, cfg.MaxRate = 0.01, 0.01
	flat, _ := Synthetic(cfg)
	cfg.BurstFactor, cfg.BurstsPerHour = 50, 10
	bursty, _ := Synthetic(cfg)
	if len(bursty) < 2*len(flat) {
		t.Fatalf("bursts added too little: %d vs %d", len(bursty), len(flat))
	}
	for _, bad := range []SyntheticConfig{
		{MinRate: 2, MaxRate: 1},
		{BurstFactor: 0.5},
		{Functions: -1},
		{MemoryMB: []int{0}},
		{MaxInvocations: 10, MinRate: 10, MaxRate: 10},
	} {
		if _, err := Synthetic(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Synthetic(%+v) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func FuzzReadAzure2021(f *testing.F) {
	f.Add("app,func,end_timestamp,duration\na,f,1.5,0.5\n")
	f.Add("app,func,end_timestamp,duration\na,f,1e308,1e308\n")
	f.Fuzz(func(t *testing.T, in string) {
		invs, err := ReadAzure2021(strings.NewReader(in), Azure2021Options{})
		if err == nil {
			checkSorted(t, invs)
		}
	})
}

func FuzzReadAzure2019(f *testing.F) {
	f.Add("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,3,0\n")
	f.Fuzz(func(t *testing.T, in string) {
		invs, err := ReadAzure2019(strings.NewReader(in), nil, nil, Azure2019Options{})
		if err == nil {
			checkSorted(t, invs)
		}
	})
}
