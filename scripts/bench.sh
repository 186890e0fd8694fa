#!/usr/bin/env bash
# Runs the benchmarks recorded in docs/BENCHMARKS.md, COUNT times each, and
# summarizes them with benchstat. Raw output goes to build/bench/.
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
run() { # name, package, bench regexp
  echo "== $1: go test -run '^\$' -bench '$3' -count $COUNT -benchtime $BENCHTIME $2" >&2
  go test -run '^$' -bench "$3" -count "$COUNT" -benchtime "$BENCHTIME" "$2" | tee "$out/$1.txt"
  benchstat "$out/$1.txt"
}
run coldstart ./sandbox/wasm 'ColdStart'
run compile ./sandbox/wasm 'Compile'
run http ./server 'HTTP'
