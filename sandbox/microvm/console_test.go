package microvm

import (
	"slices"
	"strings"
	"testing"
)

// The agent's lines survive a kernel panic's trace in the console: lines
// finds them wherever they are in what is kept.
func TestConsole_Lines(t *testing.T) {
	c := newConsole()
	out := "kindling-agent: starting\n[ 1.0] boot\nkindling-agent: open /dev/vport0p1: no such device\n" +
		strings.Repeat("[ 6.0] panic trace\n", 200)
	c.run(strings.NewReader(out))
	for _, tc := range []struct {
		max  int
		want []string
	}{
		{10, []string{"kindling-agent: starting", "kindling-agent: open /dev/vport0p1: no such device"}},
		{1, []string{"kindling-agent: open /dev/vport0p1: no such device"}},
	} {
		if got := c.lines("kindling-agent", tc.max); !slices.Equal(got, tc.want) {
			t.Errorf("lines(max %d) = %q, want %q", tc.max, got, tc.want)
		}
	}
	if strings.Contains(c.tail(1500), "kindling-agent") {
		t.Fatal("the tail still holds the agent's lines: the test does not push them out")
	}
}
