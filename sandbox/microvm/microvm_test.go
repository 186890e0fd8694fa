package microvm

import (
	"testing"

	"github.com/kindling-dev/kindling/sandbox"
	"github.com/kindling-dev/kindling/sandbox/sandboxtest"
)

func TestConformance(t *testing.T) {
	requireHost(t)
	sandboxtest.Run(t, func(t *testing.T) sandbox.Driver { return newTestDriver(t) }, sandboxtest.Fixtures{
		Hello:    fixture(t, "hello"),
		Echo:     fixture(t, "echo"),
		Trap:     fixture(t, "trap"),
		Exit:     fixture(t, "exit"),
		Loop:     fixture(t, "loop"),
		OOM:      fixture(t, "oom"),
		Counter:  fixture(t, "counter"),
		Invalid:  []byte("#!/bin/sh\necho a script is not a static executable\n"),
		MemoryMB: 128,
	})
}
