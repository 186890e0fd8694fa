//go:build !wasip1

package kindling

import "os"

// environ returns the process environment (for tests on the host).
func environ() envList {
	var env envList
	for _, kv := range os.Environ() {
		env = env.add(kv)
	}
	return env
}
