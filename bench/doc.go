// Package bench measures cold starts phase by phase and prints them side by
// side: the segmented cold-start table of the research notes (seed 000),
// for every sandbox kindling has and for the reference engines it is
// compared with.
//
// A run executes chosen workloads (the suite of package workloads, or any
// program that follows its output contract) in chosen columns, N times
// each. A column is one way of running a workload, measured through the
// sandbox phases of package phase:
//
//   - a kindling sandbox in a mode, such as "wasm cold" (nothing compiled:
//     a new driver with an empty compilation cache), "wasm cached" (a new
//     driver whose on-disk cache holds the module, as after a daemon
//     restart) or "wasm warm" (the module prepared once, a fresh instance
//     per run);
//   - a peer: "floor" (bare wazero, no kindling code around it) and
//     "wasmtime" (wasmtime-go, only in builds with -tags wasmtime and cgo).
//
// Every run checks the workload's result, so a column that is fast because
// it is wrong is an error, not a number. For each workload and column the
// report holds the median and 90th percentile of every phase and of the
// total, and each column's total as a ratio to kindling's steady state
// ("wasm warm"). A Report renders as a text table (WriteText), a JSON
// document with a stable schema (WriteJSON, ReadJSON; see README.md) and a
// self-contained HTML page with SVG charts (WriteHTML).
//
// Sandboxes and peers plug in with Register: each provides a Column per
// mode it supports, and each Column turns a Workload into a Runner.
package bench
