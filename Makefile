# fedge Makefile. `make test` is what CI runs (.ci/run); it installs what the
# tests need when run as root on Debian (protoc, Mosquitto, clang/lld, wabt).

GO        ?= go
FUZZTIME  ?= 3s
AGENT_TARGETS := linux/amd64 linux/arm64 linux/arm/7 linux/riscv64
export FEDGE_REQUIRE_EXTERNAL ?= 1

.PHONY: layers-check test-short
.PHONY: all build test check deps proto proto-check wasm wasm-check fmt-check vet tidy-check fuzz race agents bench clean
.PHONY: bench-peers

all: build

build:
	$(GO) build ./...

deps:
	bash scripts/deps.sh

## test: everything CI runs: deps, the freshness checks, vet, the race-enabled
## test suites (slow and external-broker suites included) and short fuzz runs.
test: deps check race fuzz

## test-short: the inner loop: the tests without the race detector and with
## -short, which skips the process, crash, Mosquitto and long fleet suites
## (testing.Short); no fuzzing. `make test` runs all of them, never -short.
test-short:
	$(GO) test -short ./...

race:
	$(GO) test -race -count=1 -timeout 25m ./...

fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

## check: fails when formatting, vet, go.mod, the generated protobuf code or
## the built WASM models are not what the sources say.
check: fmt-check vet tidy-check proto-check wasm-check

# layers-check: the import rules of RATIONALE.md's Structure section.
check: layers-check
layers-check:
	$(GO) test -count=1 ./internal/layers

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

tidy-check:
	$(GO) mod tidy -diff

proto:
	bash scripts/proto-check.sh --write

proto-check:
	bash scripts/proto-check.sh

wasm:
	bash wasm-models/build.sh

wasm-check:
	bash scripts/wasm-check.sh

agents:
	@mkdir -p bin
	@for t in $(AGENT_TARGETS); do \
		os=$${t%%/*}; rest=$${t#*/}; arch=$${rest%%/*}; arm=; \
		case $$rest in arm/*) arm=$${rest#arm/};; esac; \
		out=bin/edgeagent-$$os-$$arch$${arm:+v$$arm}; \
		echo "building $$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags='-s -w' -o $$out ./cmd/edgeagent || exit 1; \
	done; ls -l bin/

bench:
	$(GO) test -run='^$$' -bench=. -benchtime=1x ./... 2>&1 | tee bench.out

## bench-peers: PyTorch (Debian's python3-torch, installed here only, not by
## `make test`), fedge's WASM and native engines on the same models, batch
## sizes and thread counts, alternated; prints samples/s, the ratios, and
## GFLOP/s against the WASM SIMD peak measured in the same run.
bench-peers:
	bash scripts/deps.sh --peers
	$(GO) run ./scripts/benchpeers $(BENCH_PEERS_FLAGS)

clean:
	rm -rf bin bench.out
