package bench

// WasmtimePeer is the name of the Wasmtime peer. Its column exists only in
// builds with cgo and -tags wasmtime, which link wasmtime-go's C library;
// other builds list it with a note saying so.
const WasmtimePeer = "wasmtime"
