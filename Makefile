# rollback — see README.md.
SHELL   := /bin/bash
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/rollback-dev/rollback/internal/cli.Version=$(VERSION)
GO      ?= go
# Every build, vet and test is -trimpath, as the sandbox's binary is: one
# build cache serves them all, so 'make test' after 'make demo' does not
# compile the Kubernetes packages a second time.
export GOFLAGS := -trimpath $(GOFLAGS)

.PHONY: all build deps deps-demo peers peers-optimized test unit e2e demo bench bench-db bench-mdl bench-merge bench-canary bench-wide bench-serve bench-fail dist dist-check fuzz lint clean

all: build

## deps: install what a fresh machine lacks (apt-get packages)
deps:
	@scripts/install-deps.sh

## build: bin/rollback, bin/kubectl-rollback, bin/rollback-sandbox, bin/kwok
# (the sandbox after rollback: its module keeps rollback's versions of the
# modules both use, so it reuses the ~600 packages rollback's build
# compiled, test/modules checks; kwok, whose Kubernetes libraries are
# older and compile apart, beside rollback)
build:
	scripts/build-sandbox.sh kwok & kwok=$$!; \
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/rollback ./cmd/rollback; rc=$$?; \
	wait $$kwok && [ $$rc -eq 0 ]
	ln -sf rollback bin/kubectl-rollback
	scripts/build-sandbox.sh sandbox

## peers: the real peers the end-to-end tests run (Gateway API CRDs, ...), cached by version
peers:
	scripts/build-peers.sh

## peers-optimized: the peers compiled with optimisation, for the benchmarks that time them
peers-optimized:
	PEERS_OPTIMIZE=1 scripts/build-peers.sh

## test: everything, against a real sandbox (the README's test command); the
## peers build in the background while the tests that need none of them run
# (apt-get beside the build: a fresh machine's downloads and compiles overlap)
test:
	@$(MAKE) --no-print-directory -j2 deps build
	scripts/test.sh

## unit: the tests that need no sandbox (PostgreSQL is started for internal/migrate and internal/cli)
unit:
	$(GO) test -count=1 ./internal/...

## demo: a full rollback fire drill on the local sandbox (the README's first command)
# Only what the drill needs is installed and built (the tests' peers and
# browser come with 'make test', which reuses the binaries, the sandbox's
# cache and the Go build cache from here).
demo:
	@$(MAKE) --no-print-directory -j2 deps-demo build
	scripts/demo.sh

## deps-demo: what the demo needs and a fresh machine lacks (no test-only peers)
deps-demo:
	@scripts/install-deps.sh demo

## bench: rollback run against kubectl rollout undo, and sandbox start times
bench: deps build peers-optimized
	scripts/bench.sh

## bench-db: down-migration timings and query latency under load (real PostgreSQL)
bench-db: deps
	$(GO) run ./bench/dbbench

## bench-mdl: readers' worst latency while a long transaction holds a metadata lock, rollback vs the mariadb client (real MariaDB)
bench-mdl: deps
	$(GO) run ./bench/mdlbench

## bench-merge: the undo that gives back what a release destroyed: rows lost under writes against
## pg_restore, merge time and readers' latency, capture against pg_dump (real PostgreSQL, durable)
bench-merge: deps
	$(GO) run ./bench/mergebench

## bench-canary: time to detect and false rollbacks, sequential test vs Flagger's default
## (synthetic streams), then the live comparison with the real Flagger on the sandbox
bench-canary: deps build peers-optimized
	$(GO) run ./bench/canarybench
	$(GO) run ./bench/flaggerbench

## bench-serve: an alert storm on rollback serve, and its reads with 10,000 incidents (real PostgreSQL)
bench-serve: deps
	$(GO) run ./bench/servebench

## bench-fail: time to rolled back out of crash-looping, never-Ready and unpullable pods
## per workload kind, rollback run against kubectl rollout undo + status, on the sandbox
bench-fail: deps build
	$(GO) run ./bench/failbench

## bench-wide: a wide rollback of 200 Deployments against one, at --parallel 20 (the default) and 200, against the direct floor, on the sandbox
bench-wide: deps build
	$(GO) run ./bench/widebench

## dist: release archives for linux/darwin × amd64/arm64, checksums, the krew
## manifest and the container image (an OCI layout) in dist/ (VERSION=1.2.3)
dist:
	scripts/dist.sh

## dist-check: build dist/ for linux/amd64, install it with the real krew, run it, and run the image's binary
dist-check:
	scripts/dist-check.sh

## fuzz: run every fuzz target for FUZZTIME each (default 20s)
FUZZTIME ?= 20s
fuzz:
	$(GO) test ./internal/config -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	$(GO) test ./internal/cli -run '^$$' -fuzz FuzzParseWorkloadArg -fuzztime $(FUZZTIME)
	$(GO) test ./internal/kube -run '^$$' -fuzz FuzzParsePath -fuzztime $(FUZZTIME)
	$(GO) test ./internal/migrate -run '^$$' -fuzz FuzzSplit -fuzztime $(FUZZTIME)
	$(GO) test ./internal/migrate -run '^$$' -fuzz FuzzParseName -fuzztime $(FUZZTIME)
	$(GO) test ./internal/migrate -run '^$$' -fuzz FuzzAnalyze -fuzztime $(FUZZTIME)
	$(GO) test ./internal/migrate -run '^$$' -fuzz FuzzSafeDSN -fuzztime $(FUZZTIME)
	$(GO) test ./internal/image -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	$(GO) test ./internal/kube -run '^$$' -fuzz FuzzALBAction -fuzztime $(FUZZTIME)

clean:
	rm -rf bin
