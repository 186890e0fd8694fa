//go:build !wasip1

package kindling

import (
	"os"
	"strings"
)

// environ returns the process environment (for tests on the host).
func environ() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}
