package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/workloads"
)

// moduleWorkload is a workload made of a test module; with the echo
// module and stdin set to a workload's response, it behaves like one.
func moduleWorkload(t testing.TB, name string, module []byte, stdin, expected string) Workload {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".wasm")
	if err := os.WriteFile(path, module, 0o644); err != nil {
		t.Fatal(err)
	}
	return Workload{Name: name, Expected: expected, Stdin: []byte(stdin), Artifacts: map[string]string{workloads.TargetWasm: path}}
}

func response(result string) string {
	return "Content-Type: application/json\n\n{\"workload\":\"echo\",\"result\":\"" + result + "\"}\n"
}

// echoWorkload answers result on every run, in microseconds.
func echoWorkload(t testing.TB, name, result string) Workload {
	return moduleWorkload(t, name, testmodules.Echo, response(result), result)
}

// availablePeers lists the peers this build can run.
func availablePeers() []string {
	var out []string
	for _, s := range Sandboxes() {
		if s.Peer && s.Unavailable == "" {
			out = append(out, s.Name)
		}
	}
	return out
}

// wantPhases is what each column must record.
func wantPhases(column string) []phase.Name {
	invoke := []phase.Name{phase.Instantiate, phase.Startup, phase.Run, phase.Teardown}
	switch column {
	case "wasm cold", "wasm cached":
		return append([]phase.Name{phase.ArtifactLoad, phase.Compile}, invoke...)
	case "wasm warm":
		return invoke
	default: // peers
		return []phase.Name{phase.Instantiate, phase.Run}
	}
}

func TestRunAllModes(t *testing.T) {
	var progress bytes.Buffer
	opts := Options{
		Workloads: []Workload{echoWorkload(t, "echo-a", "a"), echoWorkload(t, "echo-b", "b")},
		Runs:      map[Mode]int{Cold: 2, Cached: 2, Warm: 3},
		Progress:  &progress,
	}
	rep, err := Run(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var wantCols []string
	for _, m := range DefaultModes {
		wantCols = append(wantCols, "wasm "+string(m))
	}
	wantCols = append(wantCols, availablePeers()...)
	var gotCols []string
	for _, c := range rep.Columns {
		gotCols = append(gotCols, c.Name)
	}
	if !slices.Equal(gotCols, wantCols) {
		t.Fatalf("columns %v, want %v", gotCols, wantCols)
	}
	if !slices.Equal(rep.Phases, canonicalPhases) {
		t.Errorf("phases %v, want %v", rep.Phases, canonicalPhases)
	}

	for _, w := range rep.Workloads {
		if len(w.Cells) != len(wantCols) {
			t.Fatalf("%s: %d cells, want %d", w.Name, len(w.Cells), len(wantCols))
		}
		for i, c := range w.Cells {
			info := rep.Columns[i]
			if c.Column != info.Name || c.Runs != info.Runs || len(c.TotalsNs) != c.Runs {
				t.Errorf("%s/%s: cell %+v does not match column %+v", w.Name, info.Name, c, info)
			}
			var got []phase.Name
			for _, p := range c.Phases {
				got = append(got, p.Name)
				if p.MedianNs < 0 || p.P90Ns < p.MedianNs || p.MinNs > p.MedianNs || p.MaxNs < p.P90Ns {
					t.Errorf("%s/%s/%s: inconsistent stat %+v", w.Name, c.Column, p.Name, p.Stat)
				}
			}
			if want := wantPhases(c.Column); !slices.Equal(got, want) {
				t.Errorf("%s/%s: phases %v, want %v", w.Name, c.Column, got, want)
			}
			if c.Total.MedianNs <= 0 || c.Ratio <= 0 {
				t.Errorf("%s/%s: total %+v, ratio %v", w.Name, c.Column, c.Total, c.Ratio)
			}
			base, _ := rep.Cell(w.Name, BaselineColumn)
			if want := float64(c.Total.MedianNs) / float64(base.Total.MedianNs); c.Ratio != want {
				t.Errorf("%s/%s: ratio %v, want %v", w.Name, c.Column, c.Ratio, want)
			}
		}
		for column, detail := range map[string]string{"wasm cold": "cache=miss", "wasm cached": "cache=disk"} {
			c, _ := rep.Cell(w.Name, column)
			if p, _ := c.Phase(phase.Compile); p.Detail != detail {
				t.Errorf("%s/%s: compile detail %q, want %q", w.Name, column, p.Detail, detail)
			}
		}
		if c, _ := rep.Cell(w.Name, BaselineColumn); c.Ratio != 1 {
			t.Errorf("%s: baseline ratio %v, want 1", w.Name, c.Ratio)
		}
	}
	for i, s := range rep.Summary {
		if s.Column != wantCols[i] || s.GeomeanRatio <= 0 {
			t.Errorf("summary %d = %+v", i, s)
		}
	}
	if rep.Schema != Schema || rep.Host.CPUs == 0 || rep.WallNs <= 0 || rep.MemoryMB != 128 || rep.Baseline != BaselineColumn {
		t.Errorf("report header %+v", rep)
	}

	// Runs in column order, each reported.
	lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
	runs := 0
	for _, l := range lines {
		if strings.Contains(l, " · run ") || strings.Contains(l, "warm-up") {
			runs++
		}
	}
	wantRuns := 2 * (2 + 2 + 4 + 4*len(availablePeers()))
	if runs != wantRuns {
		t.Errorf("progress reported %d runs, want %d:\n%s", runs, wantRuns, progress.String())
	}

	checkText(t, rep)
	checkJSON(t, rep)
}

// checkText checks the text table has a row per phase and the total and
// ratio rows, under a header naming every column, for every workload.
func checkText(t *testing.T, rep *Report) {
	t.Helper()
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	t.Logf("text report:\n%s", text)
	lines := strings.Split(text, "\n")
	for _, w := range rep.Workloads {
		at := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, w.Name+" ") })
		if at < 0 {
			t.Fatalf("no table for %s", w.Name)
		}
		for _, c := range rep.Columns {
			if !strings.Contains(lines[at], c.Name) {
				t.Errorf("%s header %q lacks column %s", w.Name, lines[at], c.Name)
			}
		}
		rows := []string{}
		for _, p := range rep.Phases {
			rows = append(rows, string(p))
		}
		rows = append(rows, "total", "× "+rep.Baseline)
		for i, row := range rows {
			fields := strings.Fields(strings.TrimPrefix(lines[at+1+i], "  "+row))
			if !strings.HasPrefix(lines[at+1+i], "  "+row+" ") {
				t.Errorf("%s: line %d is %q, want the %s row", w.Name, i+1, lines[at+1+i], row)
				continue
			}
			cells := len(fields)
			if row != "× "+rep.Baseline {
				cells = 0 // "median (p90)" cells are two fields, "–" one
				for _, f := range fields {
					if !strings.HasPrefix(f, "(") {
						cells++
					}
				}
			}
			if cells != len(rep.Columns) {
				t.Errorf("%s: %s row %q has %d cells, want %d", w.Name, row, lines[at+1+i], cells, len(rep.Columns))
			}
		}
	}
	for _, want := range []string{"summary: median total (× wasm warm)", "geomean", "wall time"} {
		if !strings.Contains(text, want) {
			t.Errorf("text report lacks %q", want)
		}
	}
}

// checkJSON round-trips the report and checks the documented field names.
func checkJSON(t *testing.T, rep *Report) {
	t.Helper()
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSON(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rep) {
		t.Errorf("JSON round trip changed the report:\n got %+v\nwant %+v", got, rep)
	}

	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	hasKeys := func(what string, v any, keys ...string) {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s is %T, want an object", what, v)
		}
		for _, k := range keys {
			if _, ok := m[k]; !ok {
				t.Errorf("%s has no %q: %v", what, k, m)
			}
		}
	}
	hasKeys("report", doc, "schema", "started", "wallNs", "host", "memoryMB", "baseline", "phases", "columns", "workloads", "summary")
	hasKeys("host", doc["host"], "os", "arch", "cpus", "go")
	hasKeys("column", doc["columns"].([]any)[0], "name", "sandbox", "mode", "target", "about", "runs")
	w := doc["workloads"].([]any)[0]
	hasKeys("workload", w, "name", "cells")
	cell := w.(map[string]any)["cells"].([]any)[0]
	hasKeys("cell", cell, "column", "runs", "phases", "total", "ratio", "totalsNs")
	hasKeys("total", cell.(map[string]any)["total"], "medianNs", "p90Ns", "minNs", "maxNs")
	hasKeys("phase", cell.(map[string]any)["phases"].([]any)[0], "name", "medianNs", "p90Ns", "minNs", "maxNs")
	hasKeys("summary", doc["summary"].([]any)[0], "column", "geomeanRatio")

	bad := strings.Replace(buf.String(), Schema, "kindling.bench/v0", 1)
	if _, err := ReadJSON(strings.NewReader(bad)); err == nil {
		t.Error("ReadJSON accepted another schema")
	}
}

func TestWrongResultNamesWorkloadAndColumn(t *testing.T) {
	ctx := t.Context()
	tests := []struct {
		name   string
		w      Workload
		opts   Options
		column string
		run    int
		want   string
	}{
		{
			name: "mismatch in a cold column",
			w:    moduleWorkload(t, "liar", testmodules.Echo, response("wrong"), "right"),
			opts: Options{Modes: []Mode{Cold}, Peers: []string{}},
			// the first measured run fails
			column: "wasm cold", run: 1, want: `wrong result "wrong", want "right"`,
		},
		{
			name:   "mismatch in a warm column fails at the warm-up",
			w:      moduleWorkload(t, "liar", testmodules.Echo, response("wrong"), "right"),
			opts:   Options{Modes: []Mode{Warm}, Peers: []string{}},
			column: "wasm warm", run: 0, want: "warm-up run",
		},
		{
			name:   "not a workload response",
			w:      moduleWorkload(t, "hello", testmodules.Hello, "", "x"),
			opts:   Options{Modes: []Mode{Warm}, Peers: []string{}, Warmup: -1},
			column: "wasm warm", run: 1, want: "parse result",
		},
		{
			name:   "a guest that exits non-zero, with its stderr",
			w:      moduleWorkload(t, "exit", testmodules.Exit, "", "x"),
			opts:   Options{Modes: []Mode{Cached}, Peers: []string{}},
			column: "wasm cached", run: 1, want: "bad request",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Workloads = []Workload{tt.w}
			_, err := Run(ctx, tt.opts)
			var re *RunError
			if !errors.As(err, &re) {
				t.Fatalf("Run error %v, want a *RunError", err)
			}
			if re.Workload != tt.w.Name || re.Column != tt.column || re.Run != tt.run {
				t.Errorf("RunError %+v, want workload %s, column %s, run %d", re, tt.w.Name, tt.column, tt.run)
			}
			msg := err.Error()
			for _, want := range []string{tt.w.Name, tt.column, tt.want} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
		})
	}
}

func TestFloorFailure(t *testing.T) {
	// The floor reports a guest's failure as its own.
	w := moduleWorkload(t, "exit", testmodules.Exit, "", "x")
	r, err := floorColumn{}.Prepare(t.Context(), w)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(t.Context())
	var stderr bytes.Buffer
	rec := phase.NewRecorder()
	err = r.Run(t.Context(), &sandbox.Request{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Phases: rec})
	if err == nil || !strings.Contains(err.Error(), "exit_code(3)") || stderr.String() != "bad request\n" {
		t.Fatalf("floor run: %v, stderr %q", err, stderr.String())
	}
}

func TestOptionErrors(t *testing.T) {
	w := echoWorkload(t, "echo", "ok")
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no workloads", Options{}, "no workloads"},
		{"unknown sandbox", Options{Sandboxes: []string{"vmware"}}, `unknown sandbox "vmware"`},
		{"peer as sandbox", Options{Sandboxes: []string{FloorPeer}}, "is a peer"},
		{"unknown mode", Options{Modes: []Mode{"tepid"}}, `mode "tepid"`},
		{"unknown peer", Options{Peers: []string{"v8"}}, `unknown peer "v8"`},
		{"sandbox as peer", Options{Peers: []string{"wasm"}}, `unknown peer "wasm"`},
	}
	if s, _ := lookupSandbox(WasmtimePeer); s.Unavailable != "" {
		tests = append(tests, struct {
			name string
			opts Options
			want string
		}{"wasmtime without the tag", Options{Peers: []string{WasmtimePeer}}, "wasmtime column: build with -tags wasmtime"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name != "no workloads" {
				tt.opts.Workloads = []Workload{w}
			}
			_, err := Run(t.Context(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNoteForMissingPeer(t *testing.T) {
	s, _ := lookupSandbox(WasmtimePeer)
	if s.Unavailable == "" {
		t.Skip("this build has the wasmtime peer")
	}
	rep, err := Run(t.Context(), Options{
		Workloads: []Workload{echoWorkload(t, "echo", "ok")},
		Modes:     []Mode{Warm},
		Runs:      map[Mode]int{Warm: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "wasmtime column: build with -tags wasmtime (needs cgo)"
	if !slices.Contains(rep.Notes, want) {
		t.Errorf("notes %q lack %q", rep.Notes, want)
	}
	var buf bytes.Buffer
	rep.WriteText(&buf)
	if !strings.Contains(buf.String(), "note: "+want) {
		t.Errorf("text report lacks the note:\n%s", buf.String())
	}
}

// fakeSandbox stands for a sandbox added later: its own modes, a phase
// of its own ("boot"), and a column per mode.
var registerFake = sync.OnceFunc(func() {
	Register(Sandbox{
		Name:  "fake",
		Modes: []Mode{Warm, "restore"},
		New: func(m Mode, env *Env) (Column, error) {
			return fakeColumn{mode: m}, nil
		},
	})
})

type fakeColumn struct{ mode Mode }

func (c fakeColumn) Info() ColumnInfo {
	return ColumnInfo{Name: "fake " + string(c.mode), Sandbox: "fake", Mode: c.mode, Target: "fake", About: "a test double"}
}

func (c fakeColumn) Prepare(ctx context.Context, w Workload) (Runner, error) {
	return fakeRunner{w: w}, nil
}

type fakeRunner struct{ w Workload }

func (r fakeRunner) Run(ctx context.Context, req *sandbox.Request) error {
	req.Phases.Add("boot", 3*time.Millisecond, "")
	req.Phases.Add(phase.Run, time.Millisecond, "")
	_, err := fmt.Fprint(req.Stdout, response(r.w.Expected))
	return err
}

func (fakeRunner) Close(context.Context) error { return nil }

func TestMoreSandboxesAndModes(t *testing.T) {
	registerFake()
	w := echoWorkload(t, "echo", "ok")
	w.Artifacts["fake"] = "-"
	rep, err := Run(t.Context(), Options{
		Workloads: []Workload{w},
		Sandboxes: []string{"wasm", "fake", "wasm"},
		Modes:     []Mode{Warm, "restore", Warm},
		Peers:     []string{},
		Runs:      map[Mode]int{Warm: 2, "restore": 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, c := range rep.Columns {
		cols = append(cols, fmt.Sprintf("%s:%d", c.Name, c.Runs))
	}
	if want := []string{"wasm warm:2", "fake warm:2", "fake restore:3"}; !slices.Equal(cols, want) {
		t.Errorf("columns %v, want %v", cols, want)
	}
	if want := append(slices.Clone(canonicalPhases), "boot"); !slices.Equal(rep.Phases, want) {
		t.Errorf("phases %v, want %v", rep.Phases, want)
	}
	if !slices.Contains(rep.Notes, "wasm has no restore mode") {
		t.Errorf("notes %q", rep.Notes)
	}
	c, _ := rep.Cell("echo", "fake restore")
	if c.Total.MedianNs != (4 * time.Millisecond).Nanoseconds() {
		t.Errorf("fake total %v", c.Total)
	}
	if got, _ := Targets(Options{Sandboxes: []string{"wasm", "fake"}, Modes: []Mode{Warm}}); !slices.Equal(got, []string{"wasm", "fake"}) {
		t.Errorf("Targets = %v", got)
	}
	var buf bytes.Buffer
	rep.WriteText(&buf)
	if !strings.Contains(buf.String(), "\n  boot ") {
		t.Errorf("no boot row:\n%s", buf.String())
	}
}

func TestStats(t *testing.T) {
	ms := func(n ...int) []int64 {
		var out []int64
		for _, v := range n {
			out = append(out, int64(v)*1e6)
		}
		return out
	}
	tests := []struct {
		in   []int64
		want Stat
	}{
		{nil, Stat{}},
		{ms(5), Stat{5e6, 5e6, 5e6, 5e6}},
		{ms(3, 1), Stat{2e6, 2.8e6, 1e6, 3e6}},
		{ms(10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100), Stat{6e6, 10e6, 1e6, 100e6}},
		{ms(4, 1, 3, 2), Stat{2.5e6, 3.7e6, 1e6, 4e6}},
	}
	for _, tt := range tests {
		if got := stat(tt.in); got != tt.want {
			t.Errorf("stat(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	runs := [][]phase.Timing{
		{{Name: phase.Run, Duration: 4}, {Name: phase.Compile, Duration: 10, Detail: "cache=miss"}},
		{{Name: phase.Compile, Duration: 20, Detail: "cache=disk"}, {Name: "boot", Duration: 2}},
		{{Name: phase.Compile, Duration: 30, Detail: "cache=miss"}, {Name: phase.Run, Duration: 6}},
	}
	c := summarize("x", runs)
	var names []phase.Name
	for _, p := range c.Phases {
		names = append(names, p.Name)
	}
	if want := []phase.Name{phase.Compile, phase.Run, "boot"}; !slices.Equal(names, want) {
		t.Errorf("phases %v, want %v", names, want)
	}
	if p, _ := c.Phase(phase.Compile); p.Detail != "cache=miss,cache=disk" || p.MedianNs != 20 {
		t.Errorf("compile %+v", p)
	}
	if p, _ := c.Phase(phase.Run); p.MedianNs != 4 || p.MinNs != 0 {
		t.Errorf("run (absent from one run counts 0) %+v", p)
	}
	if !slices.Equal(c.TotalsNs, []int64{14, 22, 36}) || c.Total.MedianNs != 22 || c.Runs != 3 {
		t.Errorf("totals %v, %+v", c.TotalsNs, c.Total)
	}
}

func TestFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0ns", 812: "812ns", 41234: "41.2µs", 999_400: "999µs", 3_051_000: "3.05ms",
		12_340_000: "12.3ms", 1_520_000_000: "1.52s", 75 * time.Second: "75.0s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%d) = %q, want %q", d, got, want)
		}
	}
	for x, want := range map[float64]string{0: "–", 0.314: "0.31×", 1: "1.00×", 20.34: "20.3×", 812.4: "812×"} {
		if got := formatRatio(x); got != want {
			t.Errorf("formatRatio(%v) = %q, want %q", x, got, want)
		}
	}
}

func TestProgress(t *testing.T) {
	var lines bytes.Buffer
	p := newProgress(&lines, false, 12)
	p.note("json: preparing 3 columns")
	p.run("json", "wasm cold", 1, 3, 1520*time.Millisecond)
	p.run("json", "wasm warm", 0, 20, 3*time.Millisecond)
	p.finish()
	want := "bench: json: preparing 3 columns\nbench: [ 1/12] json · wasm cold · run 1/3 · 1.52s\nbench: [ 2/12] json · wasm warm · warm-up · 3.00ms\n"
	if lines.String() != want {
		t.Errorf("progress lines:\n%q\nwant\n%q", lines.String(), want)
	}

	var bar bytes.Buffer
	p = newProgress(&bar, true, 4)
	p.run("json", "wasm cold", 1, 3, time.Second)
	p.run("json", "wasm cold", 2, 3, time.Second)
	p.finish()
	out := bar.String()
	if strings.Contains(out, "\n") || strings.Count(out, "\r\033[K") != 3 || !strings.Contains(out, "[############............] 2/4 runs") {
		t.Errorf("progress bar output %q", out)
	}
}

func TestEnvOnce(t *testing.T) {
	env := &Env{}
	var calls int
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			errs[i] = env.Once("k", func() error {
				calls++
				time.Sleep(10 * time.Millisecond)
				return errors.New("boom")
			})
		})
	}
	wg.Wait()
	if calls != 1 {
		t.Errorf("fn ran %d times", calls)
	}
	for _, err := range errs {
		if err == nil || err.Error() != "boom" {
			t.Errorf("Once = %v", err)
		}
	}
}
