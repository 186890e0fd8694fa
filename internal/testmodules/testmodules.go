// Package testmodules embeds the small hand-written WebAssembly modules
// (WAT sources beside them; `make wat` rebuilds them) that kindling's tests
// run: one per behaviour a sandbox must handle.
package testmodules

import _ "embed"

var (
	//go:embed hello.wasm
	Hello []byte // writes "hello, world\n"
	//go:embed echo.wasm
	Echo []byte // copies stdin to stdout
	//go:embed trap.wasm
	Trap []byte // executes unreachable
	//go:embed exit.wasm
	Exit []byte // writes "bad request\n" to stderr, exits 3
	//go:embed loop.wasm
	Loop []byte // spins forever
	//go:embed oom.wasm
	OOM []byte // grows memory until it fails, then traps
	//go:embed counter.wasm
	Counter []byte // prints "11" from a fresh instance
	//go:embed reactor.wasm
	Reactor []byte // exports _initialize but no _start
	//go:embed snapreactor.wasm
	SnapReactor []byte // a reactor whose restored instances print "init:41:2\n"
	//go:embed badinit.wasm
	BadInit []byte // a reactor whose _initialize traps
	//go:embed spinreactor.wasm
	SpinReactor []byte // a reactor whose handler spins forever
	//go:embed scribble.wasm
	Scribble []byte // a reactor that writes 2 MiB per request; exits 1 if it sees a previous request's bytes
	//go:embed uninstrumentable.wasm
	Uninstrumentable []byte // spins forever; exports "kindling:interrupt" itself
	//go:embed dirty.wasm
	Dirty []byte // prints "clean\n" if all its memory was zero, then fills it; stdin's digit d grows it by 8*d pages first
	//go:embed garbage.wasm
	Garbage []byte // not WebAssembly at all
)
