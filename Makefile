# snapvol: see README.md. Everything here runs as root on a Debian host.
SHELL := /bin/bash
GO ?= go
BIN := bin/snapvol
GOFLAGS_BUILD := -trimpath -ldflags '-s -w'

.PHONY: build test fuzz chaos vet clean

build: $(BIN)

$(BIN): $(shell find . -name '*.go' -not -path './test/*') go.mod go.sum
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN) ./plugin

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# The whole suite: unit tests, fuzz targets for a bounded time, and the
# integration tests against real btrfs and a real dockerd (root required).
test: vet build
	$(GO) test -race -count=1 -timeout 60m ./...
	$(MAKE) fuzz FUZZTIME=10s

FUZZTIME ?= 2m
FUZZ_TARGETS := ./driver/names:FuzzParse ./driver/names:FuzzResolve ./driver:FuzzHandlers ./plugin:FuzzParseSize
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} for $(FUZZTIME)"; \
		$(GO) test $${t%%:*} -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME); \
	done

# The long crash test: many more SIGKILL rounds than make test runs.
CHAOS_ROUNDS ?= 10000
chaos: build
	SNAPVOL_CHAOS_ROUNDS=$(CHAOS_ROUNDS) $(GO) test -count=1 -timeout 120m -v -run 'TestChaos|TestCrash' ./test

clean:
	rm -rf bin
