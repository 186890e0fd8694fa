package shim_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/oci"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/shim/containerdtest"
)

// TestCRIPod drives containerd's CRI plugin as a kubelet does, for a pod
// of wasm containers with runtime handler "kindling" (modules in the
// rootfs and as wasm layers): one shim
// process serves the pod, the sandbox task runs until the pod is stopped,
// container logs hold the output, and nothing is left afterwards.
func TestCRIPod(t *testing.T) {
	d := daemon(t)
	c, err := d.CRI()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logDir := t.TempDir()
	podConfig := containerdtest.PodConfig("wasm-pod", fmt.Sprintf("uid-%d", time.Now().UnixNano()), logDir)
	pod, err := c.Runtime.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: podConfig, RuntimeHandler: "kindling"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	podID := pod.PodSandboxId

	containers := []struct {
		name, image string
		args        []string
		want        string
	}{
		{name: "hello", image: containerdtest.HelloWasmImage, want: containerdtest.Hello},
		{name: "probe", image: probeImage, args: []string{"/etc/greeting"}, want: "/etc/greeting: hi from the rootfs\n"},
		{name: "wasm-layer", image: wasmLayerImage, args: []string{"hello"}, want: containerdtest.Hello},
		{name: "artifact", image: artifactImage, args: []string{"hello"}, want: containerdtest.Hello},
	}
	var ids []string
	for _, ct := range containers {
		cfg := containerdtest.ContainerConfig(ct.name, ct.image, ct.name+".log", ct.args...)
		created, err := c.Runtime.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podConfig})
		if err != nil {
			t.Fatalf("CreateContainer %s: %v", ct.name, err)
		}
		ids = append(ids, created.ContainerId)
		if _, err := c.Runtime.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
			t.Fatalf("StartContainer %s: %v", ct.name, err)
		}
		log, err := containerdtest.WaitLog(ctx, filepath.Join(logDir, ct.name+".log"), ct.want)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(log, ct.want) && !strings.Contains(log, ct.want) {
			t.Errorf("%s log %q, want %q", ct.name, log, ct.want)
		}
		st, err := c.WaitExited(ctx, created.ContainerId)
		if err != nil {
			t.Fatal(err)
		}
		if st.ExitCode != 0 || st.Reason != "Completed" {
			t.Errorf("%s exited %d (%s), want 0 (Completed)", ct.name, st.ExitCode, st.Reason)
		}
	}

	// One shim process for the pod, named after its sandbox; the sandbox
	// task runs nothing but is alive.
	if pids := shimsOf(t, d, podID); len(pids) != 1 {
		t.Fatalf("shim processes for pod %s: %v, want one", podID, pids)
	}
	for _, id := range ids {
		if pids := shimsOf(t, d, id); len(pids) != 0 {
			t.Errorf("container %s has its own shim %v", id, pids)
		}
	}
	ps, err := c.Runtime.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	if ps.Status.State != cri.PodSandboxState_SANDBOX_READY {
		t.Fatalf("pod state %v after its containers exited, want ready", ps.Status.State)
	}

	for _, id := range ids {
		if _, err := c.Runtime.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: id, Timeout: 5}); err != nil {
			t.Fatalf("StopContainer: %v", err)
		}
		if _, err := c.Runtime.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("RemoveContainer: %v", err)
		}
	}
	if pids := shimsOf(t, d, podID); len(pids) != 1 {
		t.Fatalf("the pod's shim is gone (%v) while its sandbox lives", pids)
	}
	if _, err := c.Runtime.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if _, err := c.Runtime.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	eventually(t, "a shim process for the pod", func() bool { return len(shimsOf(t, d, podID)) == 0 })
	sock := shimSocket(d.Address, "k8s.io", podID)
	eventually(t, "a shim socket", func() bool { _, err := os.Stat(sock); return os.IsNotExist(err) })
	for _, id := range append(ids, podID) {
		bundle := filepath.Join(d.Dir, "state", "io.containerd.runtime.v2.task", "k8s.io", id)
		if mounts, _ := containerdtest.MountsUnder(bundle); len(mounts) != 0 {
			t.Errorf("mounts left for %s: %v", id, mounts)
		}
	}
}

// TestCompileCacheShared runs a module never seen before in two shim
// processes: the first compiles it, the second loads the compiled code
// from the node's cache.
func TestCompileCacheShared(t *testing.T) {
	d := daemon(t) // shared by the test package: connect's is the same
	client, ctx := connect(t)
	// hello with a custom section naming this run: same code, new digest.
	name := fmt.Sprintf("run%d", time.Now().UnixNano())
	module := append(append([]byte{}, testmodules.Hello...), 0, byte(2+len(name)), byte(len(name)))
	module = append(append(module, name...), '!')
	image := "docker.io/kindling/unique-" + name + ":test"
	if err := d.Import(ctx, "default", containerdtest.Image{Name: image, Files: []containerdtest.File{{Name: "m.wasm", Data: module}}}); err != nil {
		t.Fatal(err)
	}
	var details []string
	for i := 0; i < 2; i++ {
		id, stdout, _, status := run(t, ctx, client, image, "", oci.WithProcessArgs("/m.wasm"))
		if status != 0 || stdout != containerdtest.Hello {
			t.Fatalf("run %d: status %d stdout %q", i, status, stdout)
		}
		details = append(details, compileDetail(t, d, id))
	}
	if details[0] != "cache=miss" || details[1] != "cache=disk" {
		t.Fatalf("compile phases %v, want [cache=miss cache=disk]", details)
	}
}

var preparedLine = regexp.MustCompile(`compile [^}]*(cache=\w+)`)

// compileDetail finds the compile phase the shim logged for container id.
func compileDetail(t *testing.T, d *containerdtest.Daemon, id string) string {
	t.Helper()
	for _, line := range strings.Split(d.LogTail(2000), "\n") {
		if strings.Contains(line, "module prepared") && strings.Contains(line, "id="+id) {
			if m := preparedLine.FindStringSubmatch(line); m != nil {
				return m[1]
			}
		}
	}
	t.Fatalf("no module prepared log line for %s", id)
	return ""
}

// TestCRIPull pulls images from a registry through CRI, as a node does
// (containerd fetches and unpacks them), then runs them in a pod: a
// module in an ordinary layer, a raw wasm layer with an OCI config, and
// the CNCF wasm artifact. containerd before 1.6.25 and 1.7.7 cannot
// unpack images with wasm layers ("mismatched image rootfs and manifest
// layers"); there the test checks that error and side-loads the image
// (ctr images import does the same), which runs.
func TestCRIPull(t *testing.T) {
	d := daemon(t)
	client, err := d.Client()
	if err != nil {
		t.Fatal(err)
	}
	v, err := client.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pullsWasmLayers := wasmLayerPulls(v.Version)
	reg, err := containerdtest.StartRegistry()
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	c, err := d.CRI()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tests := []struct {
		name  string
		image containerdtest.Image
		args  []string
	}{
		{"tar-layer", containerdtest.Image{Files: []containerdtest.File{{Name: "hello.wasm", Data: testmodules.Hello}}, Entrypoint: []string{"/hello.wasm"}}, nil},
		{"wasm-layer", containerdtest.Image{Wasm: testmodules.Hello}, []string{"hello"}},
		{"artifact", containerdtest.Image{Wasm: testmodules.Hello, ArtifactConfig: true}, []string{"hello"}},
	}
	logDir := t.TempDir()
	podConfig := containerdtest.PodConfig("pull-pod", fmt.Sprintf("uid-%d", time.Now().UnixNano()), logDir)
	pod, err := c.Runtime.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: podConfig, RuntimeHandler: "kindling"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx := context.WithoutCancel(ctx)
		_, _ = c.Runtime.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		if _, err := c.Runtime.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
			t.Error(err)
		}
	}()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref, err := reg.Push(ctx, tt.image, "kindling/"+tt.name, "v1")
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Images.PullImage(ctx, &cri.PullImageRequest{Image: &cri.ImageSpec{Image: ref}})
			switch {
			case err == nil:
			case tt.image.Wasm != nil && !pullsWasmLayers && strings.Contains(err.Error(), "mismatched image rootfs and manifest layers"):
				t.Logf("containerd %s cannot pull wasm layers, as expected; side-loading", v.Version)
				img := tt.image
				img.Name = ref
				if err := d.ImportAll(ctx, img); err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("PullImage %s: %v", ref, err)
			}
			cfg := containerdtest.ContainerConfig(tt.name, ref, tt.name+".log", tt.args...)
			created, err := c.Runtime.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, Config: cfg, SandboxConfig: podConfig})
			if err != nil {
				t.Fatalf("CreateContainer: %v", err)
			}
			defer func() {
				if _, err := c.Runtime.RemoveContainer(context.WithoutCancel(ctx), &cri.RemoveContainerRequest{ContainerId: created.ContainerId}); err != nil {
					t.Error(err)
				}
			}()
			if _, err := c.Runtime.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
				t.Fatalf("StartContainer: %v", err)
			}
			if _, err := containerdtest.WaitLog(ctx, filepath.Join(logDir, tt.name+".log"), containerdtest.Hello); err != nil {
				t.Fatal(err)
			}
			if _, err := c.WaitExited(ctx, created.ContainerId); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// wasmLayerPulls reports whether containerd version v (as it reports it,
// "1.6.20~ds1") unpacks images with non-tar layers: 1.6.25+ and 1.7.7+.
func wasmLayerPulls(v string) bool {
	var major, minor, patch int
	if _, err := fmt.Sscanf(strings.TrimPrefix(v, "v"), "%d.%d.%d", &major, &minor, &patch); err != nil {
		return true // unknown: expect the modern behaviour
	}
	switch {
	case major != 1 || minor > 7:
		return true
	case minor == 7:
		return patch >= 7
	case minor == 6:
		return patch >= 25
	}
	return false
}
