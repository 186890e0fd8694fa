package logs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAppendReadRotate(t *testing.T) {
	root := t.TempDir()
	d := New(root, 70) // two lines per generation
	defer d.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 6; i++ {
		if err := d.Append("fn", "i1", "inv", t0.Add(time.Duration(i)*time.Minute), []byte("line "+string(rune('a'+i))+"\n")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "fn", "i1", previousName)); err != nil {
		t.Fatalf("no rotation: %v", err)
	}
	var all bytes.Buffer
	if err := d.Read("fn", time.Time{}, 0, &all); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(all.String(), "inv line f\n") || strings.Contains(all.String(), "line a") {
		t.Fatalf("after rotation the oldest generation is dropped, the newest kept:\n%s", all.String())
	}
	tests := []struct {
		name  string
		since time.Time
		tail  int
		want  []string
	}{
		{"tail", time.Time{}, 2, []string{"line e", "line f"}},
		{"since", t0.Add(5 * time.Minute), 0, []string{"line f"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := d.Read("fn", tc.since, tc.tail, &b); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(b.String()), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("got %q, want %v", lines, tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasSuffix(lines[i], w) {
					t.Errorf("line %d = %q, want suffix %q", i, lines[i], w)
				}
			}
		})
	}
	if err := d.Remove("fn"); err != nil {
		t.Fatal(err)
	}
	var none bytes.Buffer
	if err := d.Read("fn", time.Time{}, 0, &none); err != nil || none.Len() != 0 {
		t.Fatalf("after Remove: %q, %v", none.String(), err)
	}
}

func TestInstancesMergedAndPruned(t *testing.T) {
	root := t.TempDir()
	d := New(root, 0)
	defer d.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d.Append("fn", "a", "inv-1", t0.Add(2*time.Second), []byte("second\n"))
	d.Append("fn", "b", "inv-2", t0.Add(1*time.Second), []byte("first\n"))
	d.Append("fn", "a", "inv-3", t0.Add(3*time.Second), []byte("third\n"))
	for _, inst := range []string{"a", "b"} {
		if _, err := os.Stat(filepath.Join(root, "fn", inst, currentName)); err != nil {
			t.Fatalf("instance %s has no directory of its own: %v", inst, err)
		}
	}
	var b bytes.Buffer
	d.Read("fn", time.Time{}, 0, &b)
	got := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(got) != 3 || !strings.HasSuffix(got[0], "first") || !strings.HasSuffix(got[2], "third") {
		t.Fatalf("merged lines %q", got)
	}
	for i := 0; i < MaxInstances+5; i++ {
		d.Append("fn", fmt.Sprintf("x%03d", i), "inv", t0, []byte("x\n"))
	}
	entries, _ := os.ReadDir(filepath.Join(root, "fn"))
	if len(entries) > MaxInstances {
		t.Fatalf("%d instance directories kept, want at most %d", len(entries), MaxInstances)
	}
}
