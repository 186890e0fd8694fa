// Package mountinfo reads /proc/self/mountinfo: the oci sandbox uses it to
// find cgroup hierarchies and to clean up mounts; the shim's tests use it
// to check nothing stays mounted.
package mountinfo

import (
	"bufio"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	Point  string // where it is mounted
	FSType string
	Super  string // super options, e.g. "rw,memory" for a cgroup v1 hierarchy
}

// Read parses /proc/self/mountinfo.
func Read() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root point options [optional...] - fstype source super
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, tailFields := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(tailFields) < 2 {
			continue
		}
		m := Mount{Point: unescape(fields[4]), FSType: tailFields[0]}
		if len(tailFields) > 2 {
			m.Super = tailFields[2]
		}
		mounts = append(mounts, m)
	}
	return mounts, sc.Err()
}

// Under returns the mount points at or below dir, deepest first.
func Under(dir string) ([]string, error) {
	mounts, err := Read()
	if err != nil {
		return nil, err
	}
	var points []string
	for _, m := range mounts {
		if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
			points = append(points, m.Point)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(points), nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
