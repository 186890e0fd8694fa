//go:build !(wasmtime && cgo)

package bench

func init() {
	Register(Sandbox{
		Name:        WasmtimePeer,
		Peer:        true,
		Modes:       []Mode{Warm},
		Unavailable: "build with -tags wasmtime (needs cgo)",
	})
}
