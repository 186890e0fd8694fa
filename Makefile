# kindling — the two commands that matter: `make run` and `make test`.
GO       ?= go
BIN      := bin/kindling
EXAMPLES := examples/hello-go/hello-go.wasm examples/cgi-go/cgi-go.wasm
WASM_GO  := GOOS=wasip1 GOARCH=wasm $(GO) build -trimpath -ldflags='-s -w'

.PHONY: all build examples run test test-short fuzz deps bench workloads fmt vet clean wat

all: build examples

build:
	$(GO) build -o $(BIN) ./cmd/kindling
	CGO_ENABLED=0 $(GO) build -o bin/kindling-agent ./cmd/kindling-agent

examples: $(EXAMPLES)

# hello-go uses the SDK and is built as a reactor (snapshotted at deploy);
# cgi-go is a plain WASI command (the WAGI contract, no SDK).
examples/hello-go/hello-go.wasm: FORCE
	$(WASM_GO) -buildmode=c-shared -o $@ ./examples/hello-go

examples/cgi-go/cgi-go.wasm: FORCE
	$(WASM_GO) -o $@ ./examples/cgi-go

FORCE:

## run: build kindling and the examples, serve them on 127.0.0.1:8080
run: build examples
	./$(BIN) serve --deploy examples/kindling.yaml $(ARGS)

## deps: install the system packages the integration tests need (when missing)
deps:
	./scripts/install-deps.sh

## test: install what the tests need, then run every test with the race detector
test: deps
	$(GO) test -race -count=1 ./...

## fuzz: every fuzzer for a fixed count of executions (not a duration: no flakes)
FUZZ_COUNT ?= 3000x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseOutput$$' -fuzztime $(FUZZ_COUNT) ./wagi
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZ_COUNT) ./manifest
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZ_COUNT) ./sandbox/wasm/internal/wasmbin
	$(GO) test -run '^$$' -fuzz '^FuzzWithInterrupt$$' -fuzztime $(FUZZ_COUNT) ./sandbox/wasm/internal/wasmbin
	$(GO) test -run '^$$' -fuzz '^FuzzImportBytes$$' -fuzztime $(FUZZ_COUNT) ./image
	$(GO) test -run '^$$' -fuzz '^FuzzFindModule$$' -fuzztime $(FUZZ_COUNT) ./shim
	$(GO) test -run '^$$' -fuzz '^FuzzPageSet$$' -fuzztime $(FUZZ_COUNT) ./api

test-short:
	$(GO) test -short ./...

## bench: the benchmarks recorded in docs/BENCHMARKS.md
bench:
	./scripts/bench.sh

workloads:
	$(GO) run ./workloads/cmd/build-workloads -out build/workloads -target all

## wat: rebuild the hand-written test modules (needs wabt's wat2wasm)
wat:
	for f in internal/testmodules/*.wat examples/echo-wat/*.wat; do wat2wasm $$f -o $${f%.wat}.wasm; done

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf bin build $(EXAMPLES)
