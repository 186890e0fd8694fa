package oci

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/kindling-dev/kindling/agent"
	"github.com/kindling-dev/kindling/image"
	"github.com/kindling-dev/kindling/internal/ocitest"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/workloads"
)

// benchMemoryMB sizes the benchmark's containers, kindling's and the bare
// runtime's alike: 1 GiB, hence one CPU.
const benchMemoryMB = 1024

// helloWorld builds the hello-world workload and its image tarball.
func helloWorld(b *testing.B) (bin string, tarball []byte) {
	b.Helper()
	out, err := workloads.Build(context.Background(), workloads.TargetLinux, b.TempDir(), "hello-world")
	if err != nil {
		b.Fatal(err)
	}
	bin = out["hello-world"]
	var buf bytes.Buffer
	err = image.Build(&buf, image.BuildSpec{
		Ref:    "kindling/hello-world",
		Config: image.Config{Entrypoint: []string{"/hello-world"}},
		Layers: []image.Layer{{{Path: "hello-world", Source: bin, Mode: 0o755}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	return bin, buf.Bytes()
}

func checkHello(b *testing.B, out []byte) {
	if r, err := workloads.ParseResult(out); err != nil || r != "Hello, World!" {
		b.Fatalf("hello-world answered %q (%v)", out, err)
	}
}

// BenchmarkColdStart compares, for each runtime, kindling's cold start of
// the hello-world workload (an instance of a prepared image started and
// invoked once; "+close" also deletes it) with the bare runtime running the
// same program in the same kind of bundle (`runc run`: create, start, wait,
// delete), side by side.
func BenchmarkColdStart(b *testing.B) {
	_, tarball := helloWorld(b)
	for _, rt := range []string{"runc", "crun"} {
		b.Run(rt, func(b *testing.B) {
			ocitest.RequireRuntime(b, rt)
			ctx := context.Background()
			d := benchDriver(b, rt)
			p, err := d.Prepare(ctx, sandbox.BytesSpec("hello-world", tarball, benchMemoryMB), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close(ctx)
			coldStart := func(b *testing.B, withClose bool) {
				var out bytes.Buffer
				rec := phase.NewRecorder() // accumulates every iteration's phases
				for i := 0; i < b.N; i++ {
					out.Reset()
					inst, err := p.Start(ctx, rec)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := inst.Invoke(ctx, &sandbox.Request{Stdout: &out, Phases: rec}); err != nil {
						b.Fatal(err)
					}
					if !withClose {
						b.StopTimer()
					}
					if err := inst.Close(ctx); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				checkHello(b, out.Bytes())
				if !withClose {
					for _, ti := range rec.Timings() {
						b.ReportMetric(float64(ti.Duration.Microseconds())/1000/float64(b.N), string(ti.Name)+"-ms/op")
					}
				}
			}
			b.Run("kindling", func(b *testing.B) { coldStart(b, false) })
			b.Run("kindling+close", func(b *testing.B) { coldStart(b, true) })
			bare, err := d.NewBareBundle(p, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer bare.Close()
			b.Run("bare-run", func(b *testing.B) {
				var out bytes.Buffer
				for i := 0; i < b.N; i++ {
					out.Reset()
					if err := bare.Run(ctx, &out, nil); err != nil {
						b.Fatal(err)
					}
				}
				checkHello(b, out.Bytes())
			})
		})
	}
}

// BenchmarkWarmInvoke measures a request to a running instance against
// the agent's own way of running the function (agent.Exec) called directly
// on the host: the difference is what the container, the socket and the
// protocol add to a warm request.
func BenchmarkWarmInvoke(b *testing.B) {
	bin, tarball := helloWorld(b)
	b.Run("host-exec", func(b *testing.B) {
		run := &agent.Exec{Path: bin}
		for i := 0; i < b.N; i++ {
			resp := run.Run(context.Background(), &agent.Request{})
			if resp.ExitCode != 0 || resp.Error != "" {
				b.Fatalf("hello-world on the host: %+v", resp)
			}
			if i == 0 {
				checkHello(b, resp.Stdout)
			}
		}
	})
	for _, rt := range []string{"runc", "crun"} {
		b.Run(rt, func(b *testing.B) {
			ocitest.RequireRuntime(b, rt)
			ctx := context.Background()
			d := benchDriver(b, rt)
			p, err := d.Prepare(ctx, sandbox.BytesSpec("hello-world", tarball, benchMemoryMB), nil)
			if err != nil {
				b.Fatal(err)
			}
			inst, err := p.Start(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer inst.Close(ctx)
			var out bytes.Buffer
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out.Reset()
				if _, err := inst.Invoke(ctx, &sandbox.Request{Stdout: &out}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			checkHello(b, out.Bytes())
		})
	}
}

func benchDriver(b *testing.B, rt string) *Driver {
	b.Helper()
	root, err := os.MkdirTemp("", "koci-bench-")
	if err != nil {
		b.Fatal(err)
	}
	d, err := New(context.Background(), Config{Root: root, Runtime: rt, AgentPath: ocitest.Build(b).Agent})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		d.Close(context.Background())
		os.RemoveAll(root)
	})
	return d
}
