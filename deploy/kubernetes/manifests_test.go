package kubernetes

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kindling-dev/kindling/shim"
)

// object is the part of a Kubernetes object the tests look at.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct{ Name, Namespace string }
	Handler    string            `yaml:"handler"`
	Data       map[string]string `yaml:"data"`
	Scheduling struct {
		NodeSelector map[string]string `yaml:"nodeSelector"`
	} `yaml:"scheduling"`
	Spec struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	RuntimeClassName string            `yaml:"runtimeClassName"`
	NodeSelector     map[string]string `yaml:"nodeSelector"`
	HostPID          bool              `yaml:"hostPID"`
	InitContainers   []container       `yaml:"initContainers"`
	Containers       []container       `yaml:"containers"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Env     []struct {
		Name, Value string
	} `yaml:"env"`
}

// load parses every document of the embedded manifest name.
func load(t *testing.T, name string) []object {
	t.Helper()
	b, err := Manifests.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var out []object
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, o)
	}
}

func find(t *testing.T, objs []object, kind string) object {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind {
			return o
		}
	}
	t.Fatalf("no %s", kind)
	return object{}
}

// TestNamesAgree checks that the RuntimeClass, the containerd runtime the
// installer adds and the example Deployment all name the same handler,
// and that the installer installs the binary the shim's runtime type
// selects.
func TestNamesAgree(t *testing.T) {
	rc := find(t, load(t, "runtimeclass.yaml"), "RuntimeClass")
	if rc.APIVersion != "node.k8s.io/v1" || rc.Metadata.Name != "kindling" || rc.Handler != "kindling" {
		t.Fatalf("RuntimeClass %+v", rc)
	}
	inst := load(t, "installer.yaml")
	cm := find(t, inst, "ConfigMap")
	if cm.Data["RUNTIME_NAME"] != rc.Handler {
		t.Errorf("installer adds runtime %q, RuntimeClass handler is %q", cm.Data["RUNTIME_NAME"], rc.Handler)
	}
	if cm.Data["RUNTIME_TYPE"] != shim.RuntimeType {
		t.Errorf("installer runtime type %q, shim is %q", cm.Data["RUNTIME_TYPE"], shim.RuntimeType)
	}
	for _, bin := range []string{shim.BinaryName, shim.ServerBinaryName} {
		if !strings.Contains(cm.Data["install.sh"], bin) {
			t.Errorf("install.sh does not install %s", bin)
		}
	}
	ds := find(t, inst, "DaemonSet")
	if ds.APIVersion != "apps/v1" || !ds.Spec.Template.Spec.HostPID || len(ds.Spec.Template.Spec.InitContainers) != 1 {
		t.Errorf("DaemonSet %+v", ds)
	}
	for k, v := range rc.Scheduling.NodeSelector {
		if ds.Spec.Template.Spec.NodeSelector[k] != v {
			t.Errorf("RuntimeClass schedules onto %s=%s, where the installer does not run", k, v)
		}
	}
	dep := find(t, load(t, "example-deployment.yaml"), "Deployment")
	if dep.APIVersion != "apps/v1" || dep.Spec.Template.Spec.RuntimeClassName != rc.Metadata.Name {
		t.Errorf("example Deployment runtimeClassName %q, want %q", dep.Spec.Template.Spec.RuntimeClassName, rc.Metadata.Name)
	}
}

// TestInstallScript runs the installer's script against a fake node root:
// it installs the binary, adds the runtime once (it is idempotent), picks
// the section of the containerd config version, and starts from
// containerd's default config when there is none.
func TestInstallScript(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	cm := find(t, load(t, "installer.yaml"), "ConfigMap")
	script := filepath.Join(t.TempDir(), "install.sh")
	if err := os.WriteFile(script, []byte(cm.Data["install.sh"]), 0o755); err != nil {
		t.Fatal(err)
	}
	shimDir := t.TempDir()
	for _, bin := range []string{shim.BinaryName, shim.ServerBinaryName} {
		if err := os.WriteFile(filepath.Join(shimDir, bin), []byte("#!/bin/true\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := func(root string) string {
		t.Helper()
		cmd := exec.Command("sh", script)
		cmd.Env = append(os.Environ(), "HOST_ROOT="+root, "SHIM_DIR="+shimDir, "RESTART_CONTAINERD=false",
			"DEFAULT_CONFIG_COMMAND=echo version = 2 # containerd config default",
			"RUNTIME_NAME="+cm.Data["RUNTIME_NAME"], "RUNTIME_TYPE="+cm.Data["RUNTIME_TYPE"])
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
		b, err := os.ReadFile(filepath.Join(root, "etc/containerd/config.toml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, bin := range []string{shim.BinaryName, shim.ServerBinaryName} {
			if _, err := os.Stat(filepath.Join(root, "usr/local/bin", bin)); err != nil {
				t.Fatalf("%s not installed: %v", bin, err)
			}
		}
		if _, err := os.Stat(filepath.Join(root, "var/lib/kindling/shim-cache")); err != nil {
			t.Fatalf("cache dir not created: %v", err)
		}
		return string(b)
	}
	v2 := `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kindling]` + "\n" + `  runtime_type = "io.containerd.kindling.v1"`
	v3 := `[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kindling]`

	fresh := t.TempDir()
	conf := run(fresh)
	if !strings.HasPrefix(conf, "version = 2") || strings.Count(conf, v2) != 1 {
		t.Fatalf("config:\n%s", conf)
	}
	if again := run(fresh); again != conf {
		t.Fatalf("second run changed the config:\n%s", again)
	}

	newer := t.TempDir()
	if err := os.MkdirAll(filepath.Join(newer, "etc/containerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(newer, "etc/containerd/config.toml"), []byte("version = 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if conf := run(newer); strings.Count(conf, v3) != 1 || strings.Contains(conf, "grpc.v1.cri") {
		t.Fatalf("containerd 2 config:\n%s", conf)
	}
}
