package mountinfo

import (
	"slices"
	"testing"
)

func TestUnescape(t *testing.T) {
	if got := unescape(`/a\040b\134c\0`); got != `/a b\c\0` {
		t.Errorf("unescape = %q", got)
	}
}

func TestReadAndUnder(t *testing.T) {
	mounts, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(mounts, func(m Mount) bool { return m.Point == "/" }) {
		t.Fatalf("no root mount in %d mounts", len(mounts))
	}
	under, err := Under("/proc")
	if err != nil || !slices.Contains(under, "/proc") {
		t.Fatalf("Under(/proc) = %v, %v", under, err)
	}
}
