#!/usr/bin/env bash
# Runs the benchmarks recorded in docs/BENCHMARKS.md, COUNT times each, and
# summarizes them with benchstat; then the kindling bench suite (with the
# wasmtime peer, which needs cgo). Raw output goes to build/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${COUNT:-6}"
BENCHTIME="${BENCHTIME:-1s}"
out=build/bench
mkdir -p "$out"
if ! command -v benchstat >/dev/null 2>&1; then
  go install golang.org/x/perf/cmd/benchstat@latest
  export PATH="$PATH:$(go env GOPATH)/bin"
fi
run() { # name, package, bench regexp[, benchtime]
  local bt="${4:-$BENCHTIME}"
  echo "== $1: go test -run '^\$' -bench '$3' -count $COUNT -benchtime $bt $2" >&2
  go test -run '^$' -bench "$3" -count "$COUNT" -benchtime "$bt" "$2" | tee "$out/$1.txt"
  benchstat "$out/$1.txt"
}
run coldstart ./sandbox/wasm 'ColdStart'
run compile ./sandbox/wasm 'Compile' 3x
run snapshot ./workloads 'Snapshot' 200x
run http ./server 'HTTP'
run tracing ./daemon 'InvokeTracing'
run scheduler ./scheduler 'AcquireRelease'
echo "== kindling bench (all workloads, with wasmtime)" >&2
go run -tags wasmtime ./cmd/kindling bench --workloads all --modes cold,cached,warm,snapshot \
  --json "$out/suite.json" --html "$out/suite.html" | tee "$out/suite.txt"
