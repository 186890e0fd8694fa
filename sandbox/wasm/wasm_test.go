package wasm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/phase"
	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/sandbox/sandboxtest"
	"github.com/kindling-dev/kindling/sandbox/wasm"
)

var fixtures = map[string][]byte{
	"hello.wasm":   testmodules.Hello,
	"echo.wasm":    testmodules.Echo,
	"trap.wasm":    testmodules.Trap,
	"exit.wasm":    testmodules.Exit,
	"loop.wasm":    testmodules.Loop,
	"oom.wasm":     testmodules.OOM,
	"counter.wasm": testmodules.Counter,
	"reactor.wasm": testmodules.Reactor,
	"garbage.wasm": testmodules.Garbage,
}

func fixture(t testing.TB, name string) sandboxtest.Artifact {
	t.Helper()
	b, ok := fixtures[name]
	if !ok {
		t.Fatalf("no fixture %s", name)
	}
	return b
}

func newDriver(t testing.TB, opts ...wasm.Option) *wasm.Driver {
	t.Helper()
	d, err := wasm.New(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(context.Background()) })
	return d
}

func TestConformance(t *testing.T) {
	sandboxtest.Run(t, func(t *testing.T) sandbox.Driver { return newDriver(t) }, sandboxtest.Fixtures{
		Hello:    fixture(t, "hello.wasm"),
		Echo:     fixture(t, "echo.wasm"),
		Trap:     fixture(t, "trap.wasm"),
		Exit:     fixture(t, "exit.wasm"),
		Loop:     fixture(t, "loop.wasm"),
		OOM:      fixture(t, "oom.wasm"),
		Counter:  fixture(t, "counter.wasm"),
		Invalid:  fixture(t, "garbage.wasm"),
		MemoryMB: 16,
	})
}

func TestPrepare_Errors(t *testing.T) {
	d := newDriver(t)
	tests := []struct {
		name     string
		fixture  string
		memoryMB int
		want     string
	}{
		{"not wasm", "garbage.wasm", 16, "not a valid WebAssembly module"},
		{"reactor without handler", "reactor.wasm", 16, "exports neither _start"},
		{"zero memory", "hello.wasm", 0, "memoryMB must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.Prepare(context.Background(), sandboxtest.Spec(tc.name, fixture(t, tc.fixture), tc.memoryMB), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Prepare = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestCompileCache(t *testing.T) {
	dir := t.TempDir()
	spec := sandboxtest.Spec("hello", fixture(t, "hello.wasm"), 16)
	detail := func(d *wasm.Driver) string {
		rec := phase.NewRecorder()
		p, err := d.Prepare(context.Background(), spec, rec)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close(context.Background())
		for _, ti := range rec.Timings() {
			if ti.Name == phase.Compile {
				return ti.Detail
			}
		}
		t.Fatal("no compile phase")
		return ""
	}
	first := newDriver(t, wasm.WithCacheDir(dir))
	if got := detail(first); got != wasm.CacheMiss {
		t.Errorf("first compile: %s, want %s", got, wasm.CacheMiss)
	}
	// A second Prepare in the same process while the first is held.
	p, _ := first.Prepare(context.Background(), spec, nil)
	if got := detail(first); got != wasm.CacheMemory {
		t.Errorf("second compile: %s, want %s", got, wasm.CacheMemory)
	}
	p.Close(context.Background())
	// A new driver (a restarted daemon) finds it on disk.
	second := newDriver(t, wasm.WithCacheDir(dir))
	if got := detail(second); got != wasm.CacheDisk {
		t.Errorf("after restart: %s, want %s", got, wasm.CacheDisk)
	}
}

// BenchmarkColdStart measures a fresh instance + run through the driver,
// next to the bare wazero floor for the same module in the same run.
func BenchmarkColdStart(b *testing.B) {
	modules := []struct {
		name string
		bin  []byte
	}{
		{"echo-wat", testmodules.Echo},
		{"hello-go", testmodules.BuildGo(b, "examples/hello-go")},
	}
	for _, m := range modules {
		b.Run("kindling/"+m.name, func(b *testing.B) {
			sandboxtest.BenchmarkColdStart(b, newDriver(b), sandboxtest.Spec(m.name, m.bin, 64), []byte("kindling"))
		})
		b.Run("floor/"+m.name, func(b *testing.B) { benchmarkFloor(b, m.bin, []byte("kindling")) })
	}
	// The same Go hello source built as an SDK reactor: every instance
	// restored from the snapshot taken after initialization.
	reactor := testmodules.BuildGoReactor(b, "examples/hello-go")
	b.Run("kindling-snapshot/hello-go", func(b *testing.B) {
		sandboxtest.BenchmarkColdStart(b, newDriver(b, wasm.WithMemoryAccounting()), sandboxtest.Spec("hello-go", reactor, 64), []byte("kindling"))
	})
}

// benchmarkFloor is bare wazero: instantiate and run the module, nothing
// else, with the same stdin and a discarded stdout.
func benchmarkFloor(b *testing.B, bin, stdin []byte) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	mod, err := rt.CompileModule(ctx, bin)
	if err != nil {
		b.Fatal(err)
	}
	cfg := wazero.NewModuleConfig().WithName("").WithStdout(io.Discard)
	r := bytes.NewReader(stdin)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Reset(stdin)
		m, err := rt.InstantiateModule(ctx, mod, cfg.WithStdin(r))
		if err != nil {
			b.Fatal(err)
		}
		m.Close(ctx)
	}
}

// BenchmarkCompile measures preparing a module: a cold compile, a load from
// the on-disk cache (a restarted daemon), and a hit in memory.
func BenchmarkCompile(b *testing.B) {
	bin := testmodules.BuildGo(b, "examples/hello-go")
	spec := sandboxtest.Spec("hello-go", bin, 64)
	ctx := context.Background()
	prepare := func(b *testing.B, d *wasm.Driver) {
		p, err := d.Prepare(ctx, spec, nil)
		if err != nil {
			b.Fatal(err)
		}
		p.Close(ctx)
	}
	b.Run("miss", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			d, _ := wasm.New(ctx, wasm.WithCacheDir(b.TempDir()))
			prepare(b, d)
			d.Close(ctx)
		}
	})
	b.Run("disk", func(b *testing.B) {
		dir := b.TempDir()
		d, _ := wasm.New(ctx, wasm.WithCacheDir(dir))
		prepare(b, d)
		d.Close(ctx)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			d, _ := wasm.New(ctx, wasm.WithCacheDir(dir))
			prepare(b, d)
			d.Close(ctx)
		}
	})
	b.Run("memory", func(b *testing.B) {
		d := newDriver(b)
		held, err := d.Prepare(ctx, spec, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer held.Close(ctx)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			prepare(b, d)
		}
	})
}

func TestMounts(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "greeting.txt"), []byte("from the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := testmodules.BuildGo(t, "internal/testmodules/readfile")
	d := newDriver(t)
	tests := []struct {
		name   string
		mounts []sandbox.Mount
		want   string
		fails  bool
	}{
		{"mounted", []sandbox.Mount{{HostPath: dir, GuestPath: "/data", ReadOnly: true}}, "from the host", false},
		{"no mounts: no filesystem", nil, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := sandboxtest.Spec("readfile", bin, 64)
			spec.Args, spec.Mounts = []string{"/data/greeting.txt"}, tc.mounts
			out, err := sandboxtest.Invoke(context.Background(), d, spec, "", 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if (out.Err != nil) != tc.fails || out.Stdout != tc.want {
				t.Fatalf("stdout %q err %v; want %q fails=%v", out.Stdout, out.Err, tc.want, tc.fails)
			}
		})
	}
}

// A command sees the function's environment overlaid with its request's,
// and nothing of another request's: not a variable a request overrode,
// and not one a concurrent request added.
func TestRequestEnv(t *testing.T) {
	ctx := context.Background()
	d := newDriver(t)
	spec := sandboxtest.Spec("cgi-go", testmodules.BuildGo(t, "examples/cgi-go"), 64)
	// Three variables: wazero's environment list then has room for one
	// more, where a request's first variable would land if it were shared.
	spec.Env = []string{"A=1", "B=2", "HTTP_X_SPEC=spec"}
	p, err := d.Prepare(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	headers := func(env ...string) (map[string]string, error) {
		inst, err := p.Start(ctx, nil)
		if err != nil {
			return nil, err
		}
		defer inst.Close(ctx)
		var out bytes.Buffer
		if _, err := inst.Invoke(ctx, &sandbox.Request{Env: env, Stdin: strings.NewReader(""), Stdout: &out}); err != nil {
			return nil, err
		}
		_, body, ok := strings.Cut(out.String(), "\r\n\r\n")
		var got struct{ Headers map[string]string }
		if err := json.Unmarshal([]byte(body), &got); !ok || err != nil {
			return nil, fmt.Errorf("output %q: %v", out.String(), err)
		}
		return got.Headers, nil
	}
	for _, tc := range []struct {
		env  []string
		want map[string]string
	}{
		{[]string{"HTTP_X_SPEC=override", "HTTP_X_REQ=one"}, map[string]string{"HTTP_X_SPEC": "override", "HTTP_X_REQ": "one"}},
		{nil, map[string]string{"HTTP_X_SPEC": "spec"}},
		{[]string{"HTTP_X_REQ=two"}, map[string]string{"HTTP_X_SPEC": "spec", "HTTP_X_REQ": "two"}},
	} {
		got, err := headers(tc.env...)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("request env %q: the function saw %v, want %v", tc.env, got, tc.want)
		}
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 5 {
				own := fmt.Sprintf("%d.%d", i, j)
				got, err := headers("HTTP_X_REQ=" + own)
				if err != nil {
					t.Error(err)
					return
				}
				if got["HTTP_X_REQ"] != own || got["HTTP_X_SPEC"] != "spec" {
					t.Errorf("request %s saw %v", own, got)
				}
			}
		}()
	}
	wg.Wait()
}
