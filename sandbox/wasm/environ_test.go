package wasm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/internal/testmodules"
	"github.com/kindling-dev/kindling/sandbox"
)

func TestNewEnviron(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lists [][]string
		want  []string
	}{
		{"none", nil, []string{}},
		{"in order", [][]string{{"A=1", "B=2"}}, []string{"A=1", "B=2"}},
		{"a later list overrides, in place", [][]string{{"A=1", "B=2"}, {"A=three", "C=3"}}, []string{"A=three", "B=2", "C=3"}},
		{"shorter override", [][]string{{"A=long value", "B=2"}, {"A="}}, []string{"A=", "B=2"}},
		{"override of the last", [][]string{{"A=1", "B=2"}, {"B=22"}}, []string{"A=1", "B=22"}},
		{"no = sets empty", [][]string{{"FLAG"}}, []string{"FLAG="}},
		{"= in the value", [][]string{{"Q=a=b"}}, []string{"Q=a=b"}},
		{"empty key ignored", [][]string{{"=x", "D=4"}}, []string{"D=4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := newEnviron(tc.lists...)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.entries(); !slices.Equal(got, tc.want) {
				t.Fatalf("entries %q, want %q", got, tc.want)
			}
			if n := len(e.ends); n > 0 && e.ends[n-1] != uint32(len(e.buf)) {
				t.Fatalf("last entry ends at %d, buffer is %d bytes", e.ends[n-1], len(e.buf))
			}
		})
	}
}

// Past dedupIndexMin entries, repeated keys are found with a map: the
// result is the same as with the scan.
func TestNewEnviron_Many(t *testing.T) {
	var first, second []string
	want := map[string]string{}
	var order []string
	for i := range 3 * dedupIndexMin {
		k := fmt.Sprintf("K%03d", i)
		first = append(first, k+"=a")
		want[k] = "a"
		order = append(order, k)
	}
	for i := 0; i < 3*dedupIndexMin; i += 7 {
		k := fmt.Sprintf("K%03d", i)
		second = append(second, k+"=b")
		want[k] = "b"
	}
	second = append(second, "NEW=c")
	want["NEW"], order = "c", append(order, "NEW")
	e, err := newEnviron(first, second)
	if err != nil {
		t.Fatal(err)
	}
	var wantEntries []string
	for _, k := range order {
		wantEntries = append(wantEntries, k+"="+want[k])
	}
	if got := e.entries(); !slices.Equal(got, wantEntries) {
		t.Fatalf("entries %q,\nwant %q", got, wantEntries)
	}
}

func TestNewEnviron_NUL(t *testing.T) {
	for _, kv := range []string{"A=b\x00c", "A\x00B=c"} {
		if _, err := newEnviron([]string{kv}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("newEnviron(%q): err %v, want invalid argument", kv, err)
		}
	}
}

// A request whose environment has a NUL fails before running, in both
// modes, and the function keeps serving.
func TestRequestEnvNUL(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		bin  []byte
	}{
		{"command", testmodules.Echo},
		{"snapshot", testmodules.SnapReactor},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := prepareInternal(t, tc.name, tc.bin)
			for i, env := range [][]string{{"BAD=a\x00b"}, nil} {
				inst, err := p.Start(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, err = inst.Invoke(ctx, &sandbox.Request{Env: env, Stdin: strings.NewReader(""), Stdout: io.Discard})
				inst.Close(ctx)
				if bad := i == 0; bad != errors.Is(err, errdefs.ErrInvalidArgument) || !bad && err != nil {
					t.Fatalf("env %q: err %v", env, err)
				}
			}
		})
	}
}
