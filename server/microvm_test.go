package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kindling-dev/kindling/api"
)

// A static Linux binary uploaded as an artifact deploys as a microvm
// function (its template booted at deploy) and answers from a clone.
func TestMicroVMFunctionOverHTTP(t *testing.T) {
	h, bins := startMicroVM(t, "hello")
	ctx := context.Background()
	h.mustDeploy("hello-vm", bins["hello"], api.FunctionSpec{Runtime: "microvm", MemoryMB: 128, TimeoutMs: 60_000})
	res, err := h.c.Invoke(ctx, "hello-vm", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Body) != "hello, world\n" {
		t.Fatalf("microvm function answered %q", res.Body)
	}
}
