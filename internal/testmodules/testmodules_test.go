package testmodules

import (
	"bytes"
	"os"
	"testing"
)

// The echo example and the echo test module are one program.
func TestEchoMatchesExample(t *testing.T) {
	ex, err := os.ReadFile("../../examples/echo-wat/echo.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ex, Echo) {
		t.Fatal("internal/testmodules/echo.wasm differs from examples/echo-wat/echo.wasm; copy the example")
	}
}
