//go:build race

package shim_test

// raceEnabled is true when the tests run with -race; the end-to-end tests
// then build the shim binary with the race detector too.
const raceEnabled = true
