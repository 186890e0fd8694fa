package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/kindling-dev/kindling/workloads"
)

// Targets returns the workloads build targets the columns opts selects
// run, in column order.
func Targets(opts Options) ([]string, error) {
	opts = opts.withDefaults()
	cols, _, err := opts.columns(&Env{MemoryMB: opts.MemoryMB})
	if err != nil {
		return nil, err
	}
	var targets []string
	for _, c := range cols {
		if t := c.Info().Target; !slices.Contains(targets, t) {
			targets = append(targets, t)
		}
	}
	return targets, nil
}

// BuildSuite builds the named workloads of the suite (every one when names
// is empty) for each target into dir with workloads.Build, and returns them
// in suite order. Builds already in dir are reused when the suite's
// sources, go.mod, go.sum and the Go toolchain are the same as when they
// were made; when the sources are not on disk, everything is rebuilt.
func BuildSuite(ctx context.Context, dir string, targets []string, names ...string) ([]Workload, error) {
	var suite []workloads.Workload
	if len(names) == 0 {
		suite = workloads.All()
	} else {
		for _, n := range names {
			w, ok := workloads.Lookup(n)
			if !ok {
				return nil, fmt.Errorf("bench: unknown workload %q", n)
			}
			suite = append(suite, w)
		}
	}
	key, err := sourceKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: build workloads: %w", err)
	}
	out := make([]Workload, len(suite))
	for i, w := range suite {
		out[i] = Workload{Name: w.Name, Expected: w.Expected, Artifacts: map[string]string{}}
	}
	for _, target := range targets {
		var stale []string
		for i, w := range suite {
			path := artifactPath(dir, target, w.Name)
			if key != "" && upToDate(dir, target, w.Name, path, key) {
				out[i].Artifacts[target] = path
				continue
			}
			stale = append(stale, w.Name)
		}
		if len(stale) == 0 {
			continue
		}
		paths, err := workloads.Build(ctx, target, dir, stale...)
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		for i, w := range suite {
			if p, ok := paths[w.Name]; ok {
				out[i].Artifacts[target] = p
				if key != "" {
					// Best effort: a missing stamp only costs a rebuild.
					_ = os.MkdirAll(filepath.Join(dir, ".stamps"), 0o755)
					_ = os.WriteFile(stampPath(dir, target, w.Name), []byte(key), 0o644)
				}
			}
		}
	}
	return out, nil
}

func artifactPath(dir, target, name string) string {
	switch target {
	case workloads.TargetWasm:
		name += ".wasm"
	case workloads.TargetWasmReactor:
		name += ".reactor.wasm"
	}
	return filepath.Join(dir, name)
}

func stampPath(dir, target, name string) string {
	return filepath.Join(dir, ".stamps", name+"."+target)
}

func upToDate(dir, target, name, path, key string) bool {
	stamp, err := os.ReadFile(stampPath(dir, target, name))
	if err != nil || string(stamp) != key {
		return false
	}
	_, err = os.Stat(path)
	return err == nil
}

// sourceKey hashes everything a workload build depends on: the Go
// toolchain and its flags, go.mod, go.sum and the files of the workloads
// tree except tests. It returns "" when the sources are not on disk (a
// binary built with -trimpath, say).
func sourceKey(ctx context.Context) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", nil
	}
	root := filepath.Dir(filepath.Dir(file))
	tree := filepath.Join(root, "workloads")
	if _, err := os.Stat(filepath.Join(tree, "workloads.go")); err != nil {
		return "", nil
	}
	h := sha256.New()
	goenv, err := exec.CommandContext(ctx, "go", "env", "GOVERSION", "GOFLAGS", "GOAMD64").Output()
	if err != nil {
		return "", fmt.Errorf("go env: %w", err)
	}
	h.Write(goenv)
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	err = filepath.WalkDir(tree, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fmt.Fprintf(h, "%s %d\n", rel, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
