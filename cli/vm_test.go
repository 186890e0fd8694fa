package cli

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindling-dev/kindling/daemon"
	"github.com/kindling-dev/kindling/sandbox/microvm/microvmtest"
)

// serveMicroVMDaemon runs a daemon with the microvm sandbox for the test,
// points KINDLING_URL at it and returns the counter fixture built for the
// guest. It skips the test when the host lacks QEMU or a guest kernel.
func serveMicroVMDaemon(t *testing.T) (counter string) {
	t.Helper()
	microvmtest.SkipUnlessHost(t)
	ctx := context.Background()
	agent, paths := microvmtest.Build(t, "counter")
	counter = paths["counter"]
	d, err := daemon.New(ctx, daemon.Config{DataDir: t.TempDir(), OCIRuntime: "none", MicroVM: true, AgentPath: agent})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Server)
	t.Cleanup(func() { srv.Close(); d.Close(context.Background()) })
	t.Setenv("KINDLING_URL", srv.URL)
	if code, _, errOut := run(t, "", "vm", "ls"); code != 0 {
		t.Skipf("the microvm sandbox is not available on this host: %s", errOut)
	}
	return counter
}

func TestVMCommands(t *testing.T) {
	counter := serveMicroVMDaemon(t)
	dir := t.TempDir()
	workingSet := filepath.Join(dir, "working.json")
	steps := []struct {
		name       string
		stdin      string
		args       []string
		code       int
		out, errOu string
	}{
		{"deploy", "", []string{"deploy", "counter", "--wasm", counter, "--runtime", "microvm", "--memory", "128", "--timeout", "60s"}, 0, "deployed counter", ""},
		{"vm create", "", []string{"vm", "create", "--function", "counter", "--id", "b1"}, 0, "b1\n", "created vm b1 from function counter (128 MiB"},
		{"vm create needs a source", "", []string{"vm", "create"}, 1, "", "one of --function NAME or --snapshot ID is required"},
		{"vm ls", "", []string{"vm", "ls"}, 0, "b1  running  counter", ""},
		{"vm get", "", []string{"vm", "get", "b1"}, 0, `"snapshottable": true`, ""},
		{"vm invoke", "", []string{"vm", "invoke", "b1", "-d", "ignored"}, 0, "11", ""},
		{"vm snapshot", "", []string{"vm", "snapshot", "b1", "--id", "s1"}, 0, "s1\n", "snapshot s1 of vm b1: 128 MiB"},
		{"vm gone", "", []string{"vm", "invoke", "b1"}, 1, "", "not_found"},
		{"snapshot copy", "", []string{"snapshot", "copy", "s1", "s2"}, 0, "s2\n", ""},
		{"snapshot invoke recording", "", []string{"snapshot", "invoke", "s2", "--drop-cache", "--record-working-set", "-v"}, 0, "22", "restore"},
		{"working set", "", []string{"snapshot", "working-set", "s2"}, 0, `"extents": [`, ""},
		{"loading set empty", "", []string{"snapshot", "loading-set", "s2"}, 0, `"extents": []`, ""},
		{"loading set merge", "", []string{"snapshot", "loading-set", "s2", "--merge", workingSet}, 0, "loading-set of snapshot s2: ", ""},
		{"loading set put from stdin", `{"pageSize":4096,"extents":[{"start":0,"pages":2}]}`, []string{"snapshot", "loading-set", "s2", "--set", "-"}, 0, "loading-set of snapshot s2: 2 pages in 1 extents", ""},
		{"loading set bad file", "", []string{"snapshot", "loading-set", "s2", "--set", filepath.Join(dir, "missing.json")}, 1, "", "no such file"},
		{"snapshot invoke prefetching", "", []string{"snapshot", "invoke", "s2", "--prefetch", "working-set", "--drop-cache", "-d", "@" + workingSet}, 0, "22", ""},
		{"snapshot invoke bad prefetch", "", []string{"snapshot", "invoke", "s2", "--prefetch", "eager"}, 1, "", "prefetch"},
		{"snapshot ls", "", []string{"snapshot", "ls"}, 0, "\ns2 ", ""},
		{"snapshot get", "", []string{"snapshot", "get", "s2"}, 0, `"loadingSetPages": 2`, ""},
		{"drop-cache", "", []string{"snapshot", "drop-cache", "s2"}, 0, "dropped the page cache of snapshot s2", ""},
		{"snapshot rm", "", []string{"snapshot", "rm", "s1", "s2"}, 0, "deleted snapshot s2", ""},
		{"snapshot gone", "", []string{"snapshot", "get", "s1"}, 1, "", "not found"},
		{"vm rm unknown", "", []string{"vm", "rm", "b1"}, 1, "", "not found"},
	}
	for _, s := range steps {
		code, out, errOut := run(t, s.stdin, s.args...)
		if code != s.code || !strings.Contains(out, s.out) || !strings.Contains(errOut, s.errOu) {
			t.Fatalf("%s: kindling %s\n exit %d (want %d)\n stdout %q (want %q)\n stderr %q (want %q)",
				s.name, strings.Join(s.args, " "), code, s.code, out, s.out, errOut, s.errOu)
		}
		if s.name == "working set" {
			if err := os.WriteFile(workingSet, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestVMCommands_NotEnabled(t *testing.T) {
	serveDaemon(t)
	for _, args := range [][]string{{"vm", "ls"}, {"snapshot", "invoke", "s"}, {"snapshot", "working-set", "s"}} {
		code, _, errOut := run(t, "", args...)
		if code != 1 || !strings.Contains(errOut, "microvm sandbox not enabled (start the daemon with --microvm") {
			t.Errorf("kindling %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
		}
	}
}
