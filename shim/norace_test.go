//go:build !race

package shim_test

// raceEnabled is true when the tests run with -race.
const raceEnabled = false
