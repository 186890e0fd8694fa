package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestArtifacts(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	ref, err := s.PutArtifactBytes([]byte("\x00asm"))
	if err != nil {
		t.Fatal(err)
	}
	if !ValidDigest(ref.Digest) || ref.Size != 4 {
		t.Fatalf("bad ref %+v", ref)
	}
	again, _ := s.PutArtifactBytes([]byte("\x00asm"))
	if again.Digest != ref.Digest {
		t.Fatal("same bytes, different digest")
	}
	b, err := s.Artifact(ref.Digest)
	if err != nil || string(b) != "\x00asm" {
		t.Fatalf("Artifact = %q, %v", b, err)
	}
	tests := []struct {
		name string
		err  error
		do   func() error
	}{
		{"too large", errdefs.ErrTooLarge, func() error { _, err := s.PutArtifact(strings.NewReader("12345"), 4); return err }},
		{"empty", errdefs.ErrInvalidArgument, func() error { _, err := s.PutArtifactBytes(nil); return err }},
		{"missing", errdefs.ErrNotFound, func() error { _, err := s.Artifact("sha256:" + strings.Repeat("0", 64)); return err }},
		{"bad digest", errdefs.ErrInvalidArgument, func() error { _, err := s.Artifact("md5:00"); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, tc.err) {
				t.Fatalf("got %v, want %v", err, tc.err)
			}
		})
	}
}

func TestFunctionsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	f := api.Function{Name: "hello", FunctionSpec: api.FunctionSpec{Runtime: "wasm", Artifact: "sha256:" + strings.Repeat("a", 64), MemoryMB: 64}}
	if err := s.PutFunction(f); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	defer s.Close()
	got, err := s.GetFunction("hello")
	if err != nil || got.MemoryMB != 64 {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
	if err := s.DeleteFunction("hello"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteFunction("hello"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second delete = %v, want ErrNotFound", err)
	}
}

func TestLockedByAnotherDaemon(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.Close()
	if _, err := Open(dir); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("second Open = %v, want ErrUnavailable", err)
	}
}

func TestPruneInvocations(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	var invs []api.Invocation
	for i := 0; i < 10; i++ {
		invs = append(invs, api.Invocation{ID: fmt.Sprintf("%04d", i)})
	}
	if err := s.PutInvocations(invs); err != nil {
		t.Fatal(err)
	}
	if err := s.PruneInvocations(3); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		_, err := s.GetInvocation(fmt.Sprintf("%04d", i))
		if (i >= 7) != (err == nil) {
			t.Errorf("invocation %d: err %v", i, err)
		}
	}
}
