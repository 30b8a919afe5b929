# snapvol: see README.md. Everything here runs as root on a Debian host.
SHELL := /bin/bash
GO ?= go
# Two binaries: snapvol, the operator's command (cmd/snapvol: it links
# none of the daemon, so it starts in milliseconds), and snapvold, the
# daemon with every command built in (./plugin: the managed plugin's
# /snapvol; snapvol serve execs it when both are installed on a host).
BIN := bin/snapvol
DAEMON := bin/snapvold
# The build names itself: snapvol version, the start-up log line and
# snapvol_build_info say VERSION and COMMIT.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
VERSION_PKG := github.com/snapvol/snapvol/version
GOFLAGS_BUILD := -trimpath -ldflags '-s -w -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Commit=$(COMMIT)'

.PHONY: build test unit fuzz chaos vet clean plugin install uninstall install-cli uninstall-cli demo e2e

# Tests that need root (loop devices, mounts, a private dockerd) run only
# when asked for; asked for, anything missing fails them, never skips.
export SNAPVOL_ROOT_TESTS := 1

# The managed plugin: bundle directory, name in the engine, host directory
# bound at STATE_DIR inside it, and `docker plugin set` settings applied at
# install (e.g. PLUGIN_SETTINGS="POOL_SIZE=50G LOG_LEVEL=debug").
PLUGIN_BUNDLE := build/plugin
# The bundle's privileges: config.json is the local backend's (no network;
# loop devices for the pool file), config.fleet.json the same with the host
# network, for runner fleets (snapvol push to a registry, replica sources
# pulled from one: make install PLUGIN_CONFIG=config.fleet.json, docs/fleets.md),
# config.portworx.json Portworx's (host network for the OpenStorage
# endpoint; no devices). docs/operating.md, Installing.
PLUGIN_CONFIG ?= config.json
PLUGIN_NAME ?= snapvol
STATE_DIR ?= /var/lib/snapvol
PLUGIN_SETTINGS ?=
DOCKER ?= docker

build: $(BIN) $(DAEMON)

$(DAEMON): $(shell find . -name '*.go' -not -path './test/*') go.mod go.sum build/.version
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(DAEMON) ./plugin

$(BIN): $(shell find ./cmd ./admin ./version -name '*.go' -not -name '*_test.go') go.mod go.sum build/.version
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN) ./cmd/snapvol

# Rebuilds the binary when VERSION or COMMIT change.
build/.version: FORCE
	@mkdir -p build; echo '$(VERSION) $(COMMIT)' | cmp -s - $@ || echo '$(VERSION) $(COMMIT)' > $@
.PHONY: FORCE
FORCE:

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	cd test/bench && $(GO) vet -tags bench ./...
	cd test/clients && $(GO) vet ./...

# The root-free packages in seconds, as any user: grammar, store, the
# driver on an in-memory backend, the conformance suite on that backend.
UNIT_PKGS := ./driver/... ./fleet/... ./keylock ./storage ./storage/memory ./plugin ./internal/... ./metrics ./admin/... ./cmd/... ./version ./mountpoint
unit:
	SNAPVOL_ROOT_TESTS= $(GO) test -count=1 $(UNIT_PKGS)

# What the tests need, installed and built once (idempotent; root): Debian's
# packages, and the current Docker Engine (dockerd, runc) and Compose v2
# built from the Go module proxy into SNAPVOL_CI_CACHE (default
# /var/cache/snapvol-ci). See scripts/test-deps.sh.
.PHONY: deps
deps:
	scripts/test-deps.sh

# The whole suite: unit tests, fuzz targets for a bounded time, and the
# integration tests against real btrfs and real dockerds, Debian's 20.10 and
# the current Docker Engine (root required).
test: deps vet build
	$(GO) test -race -count=1 -timeout 60m ./...
	$(MAKE) fuzz FUZZTIME=200000x

# make test runs each target for a number of executions, not a duration:
# Go 1.26's fuzz coordinator can fail a target with "context deadline
# exceeded" when a -fuzztime duration ends while a worker is mid-call
# (golang/go#75804, fixed in Go 1.27), which would fail the suite at random.
FUZZTIME ?= 2m
FUZZ_TARGETS := ./driver/names:FuzzParse ./driver/names:FuzzWithOptions ./driver:FuzzHandlers ./plugin:FuzzParseSize ./driver/sources:FuzzParse ./storage/portworx:FuzzClassify
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} for $(FUZZTIME)"; \
		$(GO) test $${t%%:*} -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME); \
	done

# The long crash test: many more SIGKILL rounds than make test runs.
CHAOS_ROUNDS ?= 10000
chaos: build
	SNAPVOL_CHAOS_ROUNDS=$(CHAOS_ROUNDS) $(GO) test -count=1 -timeout 120m -v -run 'TestChaos|TestCrash' ./test

# PLUGIN_CONFIG + rootfs/ (static binary, mkfs.btrfs and btrfs with their
# libraries, CA certificates, from this host): no registry, no network.
plugin: build
	scripts/plugin-rootfs.sh $(DAEMON) $(PLUGIN_CONFIG) rootfs $(PLUGIN_BUNDLE)
	@echo "plugin bundle: $(PLUGIN_BUNDLE) ($$(du -sh $(PLUGIN_BUNDLE) | cut -f1))"

# Where the command goes: $(DESTDIR)$(PREFIX)/bin/snapvol, on root's PATH.
# DESTDIR stages it elsewhere (packaging, tests).
PREFIX ?= /usr/local
UNITDIR ?= /etc/systemd/system

# Creates and enables the plugin in the engine `docker` reaches (DOCKER_HOST
# honoured); replaces an installed one (its volumes stay in STATE_DIR; with
# volumes present Docker wants FORCE=1, see scripts/plugin-install.sh).
# Then the command, so snapvol ls works on this host.
install: plugin $(BIN)
	scripts/plugin-install.sh install "$(DOCKER)" "$(PLUGIN_NAME)" "$(PLUGIN_BUNDLE)" "$(STATE_DIR)" $(PLUGIN_SETTINGS)
	@$(MAKE) -s install-cli

# The command alone, for a host that only operates (its plugin was
# installed from a registry with docker plugin install).
install-cli: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/snapvol
	@echo "installed $(DESTDIR)$(PREFIX)/bin/snapvol ($$($(DESTDIR)$(PREFIX)/bin/snapvol version 2>/dev/null | sed -n 's/^ Version: *//p' | head -n1))"

# The plugin, then the command (kept while the plugin refuses to go, and
# while make install-host's daemon is beside it: its unit runs snapvol serve).
uninstall:
	scripts/plugin-install.sh uninstall "$(DOCKER)" "$(PLUGIN_NAME)"
	@$(MAKE) -s uninstall-cli

uninstall-cli:
	@if [ -e $(DESTDIR)$(PREFIX)/bin/snapvold ]; then \
		echo "kept $(DESTDIR)$(PREFIX)/bin/snapvol: make install-host's daemon snapvold is beside it"; \
	elif [ -e $(DESTDIR)$(PREFIX)/bin/snapvol ]; then \
		rm -f $(DESTDIR)$(PREFIX)/bin/snapvol && echo "removed $(DESTDIR)$(PREFIX)/bin/snapvol"; \
	fi

# Host mode under systemd: the command and the daemon beside it (snapvol
# serve execs snapvold), contrib/systemd/snapvol.service (Type=notify), and
# /etc/default/snapvol for the settings unless there is one.
.PHONY: install-host
install-host: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/snapvol
	install -D -m 0755 $(DAEMON) $(DESTDIR)$(PREFIX)/bin/snapvold
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/bin/snapvol|$(PREFIX)/bin/snapvol|g' contrib/systemd/snapvol.service > $(DESTDIR)$(UNITDIR)/snapvol.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/snapvol.service
	test -e $(DESTDIR)/etc/default/snapvol || install -D -m 0644 contrib/systemd/snapvol.default $(DESTDIR)/etc/default/snapvol
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed $(DESTDIR)$(PREFIX)/bin/snapvol, snapvold ($$($(DESTDIR)$(PREFIX)/bin/snapvold version 2>/dev/null | sed -n 's/^ Version: *//p' | head -n1)) and $(DESTDIR)$(UNITDIR)/snapvol.service; start it with: systemctl enable --now snapvol"

# Creates the managed plugin REGISTRY/PLUGIN_REPO:VERSION from a fresh
# build (VERSION and COMMIT in it) and pushes it, with the engine `docker`
# reaches; the created copy is removed from that engine afterwards. Install
# it with docker plugin install, upgrade to it with docker plugin upgrade
# (docs/operating.md, Upgrade and rollback).
PLUGIN_REPO ?= snapvol
PUSH_DIR := build/push
.PHONY: push
push:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host:port [VERSION=...] [PLUGIN_REPO=snapvol]" >&2; exit 2; }
	rm -rf $(PUSH_DIR) && mkdir -p $(PUSH_DIR)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(PUSH_DIR)/snapvol ./plugin
	cp -a rootfs $(PUSH_DIR)/rootfs-src
	scripts/plugin-rootfs.sh $(PUSH_DIR)/snapvol $(PLUGIN_CONFIG) $(PUSH_DIR)/rootfs-src $(PUSH_DIR)/plugin
	-$(DOCKER) plugin rm -f $(REGISTRY)/$(PLUGIN_REPO):$(VERSION) 2>/dev/null
	$(DOCKER) plugin create $(REGISTRY)/$(PLUGIN_REPO):$(VERSION) $(PUSH_DIR)/plugin
	$(DOCKER) plugin push $(REGISTRY)/$(PLUGIN_REPO):$(VERSION)
	$(DOCKER) plugin rm $(REGISTRY)/$(PLUGIN_REPO):$(VERSION)
	@echo "pushed $(REGISTRY)/$(PLUGIN_REPO):$(VERSION) ($(COMMIT))"

# A guided tour on a fresh machine as root: installs what is missing from
# Debian's packages, builds the plugin, uses the engine docker reaches or a
# private one (see demo/demo.sh).
demo:
	demo/demo.sh

# Only the Docker end-to-end suite (private dockerds, both engines;
# SNAPVOL_ENGINES=debian or current picks one; part of `make test`).
e2e: deps build
	$(GO) test -count=1 -timeout 30m -v -run 'E2E' ./test

# Performance, in one run (root; ~5 min; a sparse 16G pool file in $TMPDIR,
# removed at the end; a private dockerd): clone + mount of 8 MiB, 1 GiB and
# 4 GiB sources against cp -a, reflink copies and the bare btrfs ioctl;
# docker run with a clone against a local volume; 16 and 32 concurrent jobs;
# Get/List/Capabilities and memory at 100 to 10,000 volumes; the driver's Go
# benchmarks. Prints the table and writes bench-out/results.md, results.json
# and latency.png. BENCH_SIZES, BENCH_REPS, BENCH_SECTIONS ... tune it (see
# test/bench/bench_test.go). test/bench is a module of its own (its plot's
# font, golang.org/x/image, stays out of the main go.mod), as test/clients
# is; TestBenchModule and TestE2ETestcontainers run them from go test ./...
.PHONY: bench
bench: build
	cd test/bench && $(GO) test -tags bench -count=1 -timeout 240m -run '^TestBench$$' -v .

clean:
	rm -rf bin build
	scripts/plugin-rootfs.sh --clean rootfs
