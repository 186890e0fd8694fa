// Package manifest reads kindling.yaml, a file listing functions to
// deploy together:
//
//	functions:
//	  - name: hello
//	    wasm: hello/hello.wasm   # relative to the manifest
//	    memory: 64               # MiB (default 128)
//	    timeout: 10s             # default 30s
//	    env: {GREETING: hi}
//	    args: [--verbose]
//	    keepAlive: hybrid        # fixed (10m), fixed:5m, none, hybrid
//	    minInstances: 1          # also maxInstances, queueSize, concurrency
package manifest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
)

// Function is one entry of a manifest.
type Function struct {
	Name    string            `yaml:"name"`
	Runtime string            `yaml:"runtime"`
	Wasm    string            `yaml:"wasm"`
	Memory  int               `yaml:"memory"`
	Timeout string            `yaml:"timeout"`
	Env     map[string]string `yaml:"env"`
	Args    []string          `yaml:"args"`
	// Scheduling, as in the API's FunctionSpec.
	KeepAlive    string `yaml:"keepAlive"`
	MinInstances int    `yaml:"minInstances"`
	MaxInstances int    `yaml:"maxInstances"`
	QueueSize    int    `yaml:"queueSize"`
	Concurrency  int    `yaml:"concurrency"`
}

// Manifest is a parsed kindling.yaml.
type Manifest struct {
	Functions []Function `yaml:"functions"`
	// Dir is the manifest's directory; artifact paths are relative to it.
	Dir string `yaml:"-"`
}

// Load reads and validates the manifest at path.
func Load(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	m.Dir = filepath.Dir(path)
	return m, nil
}

// Parse decodes and validates a manifest.
func Parse(b []byte) (*Manifest, error) {
	var m Manifest
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(m.Functions) == 0 {
		return nil, fmt.Errorf("no functions listed: %w", errdefs.ErrInvalidArgument)
	}
	seen := map[string]bool{}
	for i, f := range m.Functions {
		switch {
		case f.Name == "":
			return nil, fmt.Errorf("functions[%d]: name is required: %w", i, errdefs.ErrInvalidArgument)
		case seen[f.Name]:
			return nil, fmt.Errorf("functions[%d]: %q listed twice: %w", i, f.Name, errdefs.ErrInvalidArgument)
		case f.Wasm == "":
			return nil, fmt.Errorf("function %q: wasm (the module's path) is required: %w", f.Name, errdefs.ErrInvalidArgument)
		}
		if _, err := f.timeout(); err != nil {
			return nil, fmt.Errorf("function %q: timeout: %v: %w", f.Name, err, errdefs.ErrInvalidArgument)
		}
		seen[f.Name] = true
	}
	return &m, nil
}

func (f Function) timeout() (time.Duration, error) {
	if f.Timeout == "" {
		return 0, nil
	}
	return time.ParseDuration(f.Timeout)
}

// ArtifactPath returns the path of f's module.
func (m *Manifest) ArtifactPath(f Function) string {
	if filepath.IsAbs(f.Wasm) {
		return f.Wasm
	}
	return filepath.Join(m.Dir, f.Wasm)
}

// Spec returns the API spec of f, given its uploaded artifact digest.
func (f Function) Spec(digest string) api.FunctionSpec {
	d, _ := f.timeout()
	return api.FunctionSpec{
		Runtime:   f.Runtime,
		Artifact:  digest,
		MemoryMB:  f.Memory,
		TimeoutMs: int(d / time.Millisecond),
		Env:       f.Env,
		Args:      f.Args,

		KeepAlive:    f.KeepAlive,
		MinInstances: f.MinInstances,
		MaxInstances: f.MaxInstances,
		QueueSize:    f.QueueSize,
		Concurrency:  f.Concurrency,
	}
}
