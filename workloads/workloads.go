// Package workloads is kindling's benchmark function suite: twelve small
// programs modelled on the functions used by the REAP, FaaSnap and TrEnv
// serverless research rigs. Each one lives in its own directory as a Go main
// package that builds, from the same source, both as a WASI command module
// (GOOS=wasip1 GOARCH=wasm) and as a static linux/amd64 binary.
//
// Every workload follows the platform's CGI-style function contract: it reads
// its request body from stdin, a size knob from the KINDLING_SIZE environment
// variable ("small" by default, "medium", "large" or a number), and writes a
// CGI header block followed by one JSON line such as
//
//	{"workload":"json","result":"<sha256 hex digest>"}
//
// All input is generated from fixed seeds, so the result is the same on every
// run and on both targets; Expected records it for the default size.
//
// This package lists the workloads, builds them with the Go toolchain and
// parses their output.
package workloads

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Build targets accepted by Build.
const (
	TargetWasm  = "wasm"  // GOOS=wasip1 GOARCH=wasm, <name>.wasm
	TargetLinux = "linux" // static CGO_ENABLED=0 linux/amd64, <name>
	// TargetWasmReactor builds each workload as a WASI reactor
	// (-buildmode=c-shared), which kindling snapshots after initialization;
	// outputs are <name>.reactor.wasm.
	TargetWasmReactor = "wasm-reactor"
)

// Workload describes one benchmark function.
type Workload struct {
	Name        string
	Description string
	Expected    string // the exact "result" value expected at the default size
}

var all = []Workload{
	{"hello-world", "greets the request body (or the world); measures bare start-up", "Hello, World!"},
	{"read-list", "generates a list of 1 Mi integers, reads it back and sums it", "2250837179608301-48fa8ca1d5879da9"},
	{"mmap", "allocates 32 MiB and touches it page by page", "8192-17591823568896"},
	{"image", "JPEG-encodes a 256×256 image, decodes it, rotates it 90° and re-encodes it", "ed209e95d3eab3f972609c6509355a4c9beff4106ef4708dd662435850df2247"},
	{"json", "serializes, deserializes and re-serializes a document of 400 records", "e9cc0b66d6cd0216f7b2ba04547f06d6f463111c4e4403fa0fdc3904f11f4fac"},
	{"pyaes", "AES-128-CTR encrypts and decrypts a 256 KiB buffer", "94f4cb87ff7c94cfad4020180214a31c3658b104dc9e19a4028181d43515ab18"},
	{"chameleon", "renders a 100-row HTML table with html/template", "a9faca92ca576a5d37563ce4085701c2de4256f89b15c1fe6b1284689573c384"},
	{"matmul", "multiplies two 200×200 float64 matrices", "ddec6bd2b48e9de9fae5a183d9abba8a3a633559ae29a603c94f3348fd1fe791"},
	{"ffmpeg", "converts 30 generated 320×240 RGB frames to grayscale", "90d6363a7294667d3a3862bdd9eee446a7aa34ee1bf6bec8f295a9a7fc5baf1b"},
	{"compression", "gzip-compresses and decompresses 256 KiB of text and verifies it", "41031b827feea5fffa6a36e07ead7e255ef78c72684f6f2a872b10cc2332669e"},
	{"recognition", "classifies 128 images with a small CNN (conv, ReLU, pool, dense, argmax)", "13716d6df579047bfeaed631ca0b8efc7b28491c029344b9c99bff20b7f0380d"},
	{"pagerank", "runs 20 PageRank iterations on a 20000-node graph", "b296c6f0c4276fc49d12cdac187c1a2e49121f4da13e3456b0af92f5ff01ddae"},
}

// All returns every workload, in a fixed order.
func All() []Workload {
	return append([]Workload(nil), all...)
}

// Lookup returns the workload with the given name.
func Lookup(name string) (Workload, bool) {
	for _, w := range all {
		if w.Name == name {
			return w, true
		}
	}
	return Workload{}, false
}

// Binary is a workload built as a static linux/amd64 binary, as the
// benchmarks of the oci and microvm sandboxes run it.
type Binary struct {
	Name  string `json:"name"`
	Path  string `json:"path"`
	Stdin []byte `json:"-"`
	// Expected, when set, is the "result" every run must return (see
	// ParseResult).
	Expected string `json:"expected,omitempty"`
}

// Check checks a run's stdout against the expected result, if any.
func (b Binary) Check(stdout []byte) error {
	if b.Expected == "" {
		return nil
	}
	got, err := ParseResult(stdout)
	if err != nil {
		return fmt.Errorf("%w (stdout %q)", err, stdout)
	}
	if got != b.Expected {
		return fmt.Errorf("result %q, want %q", got, b.Expected)
	}
	return nil
}

// BuildLinux builds the named workloads for TargetLinux into outDir, in
// the order named, each with its expected result at the default size.
func BuildLinux(ctx context.Context, outDir string, names ...string) ([]Binary, error) {
	paths, err := Build(ctx, TargetLinux, outDir, names...)
	if err != nil {
		return nil, err
	}
	out := make([]Binary, 0, len(names))
	for _, n := range names {
		w, _ := Lookup(n)
		out = append(out, Binary{Name: n, Path: paths[n], Expected: w.Expected})
	}
	return out, nil
}

// Build compiles the named workloads (all of them if names is empty) from
// source for target, TargetWasm or TargetLinux, into outDir and returns the
// path of each output by workload name. WebAssembly modules are written as
// <name>.wasm and Linux binaries as <name>. The workloads are built with a
// single `go build -trimpath -ldflags="-s -w"` run from the repository root,
// so the Go toolchain must be on PATH.
func Build(ctx context.Context, target, outDir string, names ...string) (map[string]string, error) {
	var goos, goarch, suffix string
	var flags []string
	switch target {
	case TargetWasm:
		goos, goarch, suffix = "wasip1", "wasm", ".wasm"
	case TargetWasmReactor:
		goos, goarch, suffix = "wasip1", "wasm", ".reactor.wasm"
		flags = []string{"-buildmode=c-shared"}
	case TargetLinux:
		goos, goarch = "linux", "amd64"
	default:
		return nil, fmt.Errorf("workloads: build: unknown target %q (want %q, %q or %q)", target, TargetWasm, TargetWasmReactor, TargetLinux)
	}
	if len(names) == 0 {
		for _, w := range all {
			names = append(names, w.Name)
		}
	}
	for _, name := range names {
		if _, ok := Lookup(name); !ok {
			return nil, fmt.Errorf("workloads: build: unknown workload %q", name)
		}
	}

	root, err := RepoRoot(ctx)
	if err != nil {
		return nil, fmt.Errorf("workloads: build: %w", err)
	}
	outDir, err = filepath.Abs(outDir)
	if err != nil {
		return nil, fmt.Errorf("workloads: build: %w", err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("workloads: build: %w", err)
	}
	// go build -o DIR/ names each binary after its package directory; stage
	// them in a private directory, then move them into place.
	stage, err := os.MkdirTemp(outDir, ".build-")
	if err != nil {
		return nil, fmt.Errorf("workloads: build: %w", err)
	}
	defer os.RemoveAll(stage)

	build := func(out string, pkgs ...string) error {
		args := append([]string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w"}, flags...)
		args = append(append(args, "-o", out), pkgs...)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("workloads: build for %s: %w\n%s", target, err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}
	if len(flags) > 0 {
		// -buildmode=c-shared takes one main package per build.
		for _, name := range names {
			if err := build(filepath.Join(stage, name), "./workloads/"+name); err != nil {
				return nil, err
			}
		}
	} else {
		var pkgs []string
		for _, name := range names {
			pkgs = append(pkgs, "./workloads/"+name)
		}
		if err := build(stage+string(filepath.Separator), pkgs...); err != nil {
			return nil, err
		}
	}

	paths := make(map[string]string, len(names))
	for _, name := range names {
		dst := filepath.Join(outDir, name+suffix)
		if err := os.Rename(filepath.Join(stage, name), dst); err != nil {
			return nil, fmt.Errorf("workloads: build for %s: %w", target, err)
		}
		paths[name] = dst
	}
	return paths, nil
}

// RepoRoot returns the root of kindling's source tree (the module root
// holding the workloads): the parent of this file's directory when the
// sources are on disk, or else the directory of the main module's go.mod.
// Code that builds parts of kindling from source (workloads, the agent)
// runs the Go toolchain there.
func RepoRoot(ctx context.Context) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Dir(filepath.Dir(file))
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return root, nil
		}
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("locating the repository root: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("locating the repository root: not inside a Go module")
	}
	root := filepath.Dir(gomod)
	if _, err := os.Stat(filepath.Join(root, "workloads")); err != nil {
		return "", fmt.Errorf("locating the repository root: %w", err)
	}
	return root, nil
}

// ParseResult extracts the "result" value from a workload's stdout: a CGI
// header block, a blank line and a JSON object with a non-empty string field
// "result".
func ParseResult(stdout []byte) (string, error) {
	body := stdout
	for {
		line, rest, ok := bytes.Cut(body, []byte("\n"))
		if !ok {
			return "", errors.New("workloads: parse result: no blank line ends the CGI header block")
		}
		body = rest
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if !bytes.Contains(line, []byte(":")) {
			return "", fmt.Errorf("workloads: parse result: malformed CGI header line %q", line)
		}
	}
	var resp struct {
		Result *string `json:"result"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return "", fmt.Errorf("workloads: parse result: %w", err)
	}
	if resp.Result == nil || *resp.Result == "" {
		return "", errors.New(`workloads: parse result: no "result" in the response`)
	}
	return *resp.Result, nil
}
