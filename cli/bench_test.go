package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindling-dev/kindling/bench"
)

func TestBenchCommand(t *testing.T) {
	dir := t.TempDir()
	jsonOut, htmlOut := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	cmd := newBench(&globals{})
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"--workloads", "hello-world", "--modes", "cached,warm", "--runs", "2", "--mode-runs", "cached=1",
		"--peers", "floor", "--json", jsonOut, "--html", htmlOut, "--build-dir", filepath.Join(dir, "build")})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	for _, want := range []string{"hello-world    wasm cached", "wasm warm", "floor", "× wasm warm"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	f, err := os.Open(jsonOut)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := bench.ReadJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Columns) != 3 || rep.Columns[0].Runs != 1 || rep.Columns[1].Runs != 2 || len(rep.Notes) != 0 {
		t.Errorf("report %+v", rep)
	}
	if b, err := os.ReadFile(htmlOut); err != nil || !bytes.Contains(b, []byte("<svg")) {
		t.Errorf("html: %v", err)
	}
	if !strings.Contains(errOut.String(), "wrote "+jsonOut) || !strings.Contains(errOut.String(), "[1/7]") {
		t.Errorf("stderr %q", errOut.String())
	}

	for _, bad := range [][]string{
		{"--mode-runs", "cached"},
		{"--modes", "tepid"},
		{"--workloads", "nope"},
		{"--peers", "v8"},
	} {
		cmd := newBench(&globals{})
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(append(bad, "--build-dir", filepath.Join(dir, "build")))
		if err := cmd.ExecuteContext(t.Context()); err == nil {
			t.Errorf("%v: no error", bad)
		} else {
			t.Logf("%v: %v", bad, err)
		}
	}
}

// TestBenchShim prints seed 000's CRI table through the CLI, against a real
// containerd the benchmark starts.
func TestBenchShim(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containerd; skipped with -short")
	}
	for _, bin := range []string{"containerd", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed", bin)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	var out, errOut bytes.Buffer
	code := Run([]string{"bench", "--sandbox", "shim", "--runs", "1"}, strings.NewReader(""), &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"RunPodSandbox", "CreateContainer", "StartContainer", "CRI total", "kindling", "runc"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("CRI table lacks %q:\n%s", want, out.String())
		}
	}
}
