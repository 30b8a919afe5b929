#!/usr/bin/env bash
# Installs and builds everything the test suite needs, on a Debian machine
# that has Go: what .ci/run and `make test` run first. Idempotent: what is
# installed or built already is left alone, so a second run takes a second.
#
#   scripts/test-deps.sh            install what is missing, build what is not built
#   scripts/test-deps.sh --print    say where things are and what they are (builds nothing)
#
# 1. Debian's packages (apt-get, as root): docker.io (dockerd 20.10,
#    containerd 1.6, runc 1.1), docker-compose 1.29, btrfs-progs,
#    busybox-static, postgresql-15, libseccomp-dev for runc, and rsync (the
#    baseline make bench's fleet section measures against).
# 2. The current Docker Engine, built from the Go module proxy into a cache
#    outside the repository (SNAPVOL_CI_CACHE, default /var/cache/snapvol-ci):
#    dockerd from github.com/moby/moby/v2 and runc >= 1.3 (Docker 29 starts
#    no container with Debian's runc 1.1.5). It runs with Debian's
#    containerd. The tests find it in $SNAPVOL_CI_CACHE/engine: dockerd,
#    runc and VERSION (test/dockerd puts that directory first in the PATH of
#    that dockerd only).
# 3. Compose v2 (github.com/docker/compose/v5), built into the same cache and
#    installed as the docker CLI plugin `docker compose` (for every docker
#    client: /usr/local/lib/docker/cli-plugins), beside docker-compose 1.29.
#
# A new engine is one variable: MOBY_VERSION, the github.com/moby/moby/v2
# module version (the engine's version string is read from that source's
# releases/versions.yaml; DOCKER_VERSION overrides it). Likewise
# RUNC_VERSION and COMPOSE_VERSION. Each build lands in a directory named
# after its version, so changing a version builds once and keeps the old one.
set -euo pipefail

MOBY_VERSION=${MOBY_VERSION:-v2.0.0-beta.24}   # Docker Engine 29.8.1
RUNC_VERSION=${RUNC_VERSION:-v1.3.6}
COMPOSE_VERSION=${COMPOSE_VERSION:-v5.5.0}

root=0
[[ $(id -u) == 0 ]] && root=1
if [[ $root == 1 ]]; then
	cache=${SNAPVOL_CI_CACHE:-/var/cache/snapvol-ci}
	plugins=/usr/local/lib/docker/cli-plugins
else
	cache=${SNAPVOL_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/snapvol-ci}
	plugins=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
fi

say() { printf 'test-deps: %s\n' "$*"; }
die() { printf 'test-deps: %s\n' "$*" >&2; exit 1; }

if [[ ${1:-} == --print ]]; then
	echo "cache:        $cache"
	echo "engine:       $cache/engine ($(cat "$cache/engine/VERSION" 2>/dev/null || echo 'not built'))"
	echo "compose v2:   $plugins/docker-compose"
	echo "versions:     moby/moby/v2 $MOBY_VERSION, runc $RUNC_VERSION, compose $COMPOSE_VERSION"
	exit 0
fi
[[ $# == 0 ]] || die "usage: $0 [--print]"

command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "Go is needed (https://go.dev/dl): it builds snapvol, the current Docker Engine and Compose v2"

# ------------------------------------------------------------ Debian packages
packages=(
	docker.io        # dockerd 20.10, containerd 1.6, runc 1.1, the docker client
	docker-compose   # compose 1.29
	btrfs-progs      # mkfs.btrfs for the pool file (and the plugin's rootfs)
	busybox-static   # the test image, made with docker import
	postgresql-15    # the live-database clone test's image, made with docker import
	apparmor         # dockerd loads its docker-default profile where the kernel has AppArmor
	libseccomp-dev   # runc's seccomp support (cgo)
	rsync            # make bench's fleet section: the rsync baseline of an incremental push+pull
	gcc libc6-dev pkg-config
	make git ca-certificates kmod util-linux mount
)
missing=()
for p in "${packages[@]}"; do
	[[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
	[[ $root == 1 ]] || die "missing Debian packages (run as root to install them): ${missing[*]}"
	say "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Installing docker.io must not start a system dockerd (bridge,
	# iptables): the tests start their own private engines.
	policy=/usr/sbin/policy-rc.d
	made_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		made_policy=1
	fi
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
	[[ $made_policy == 1 ]] && rm -f "$policy"
fi

if [[ $root == 1 && ! -e /dev/loop-control ]]; then
	modprobe loop || true
fi
[[ -e /dev/loop-control ]] || say "warning: no /dev/loop-control: the plugin's pool needs loop devices (modprobe loop)"

# ------------------------------------------------------------ Go builds
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # one build at a time (make test and .ci/run may overlap)

# built DIR: the directory holds a finished build (made by rename at the end).
built() { [[ -f $1/.done ]]; }
# finish TMP DIR: marks TMP done and moves it to DIR.
finish() {
	chmod 0755 "$1"
	touch "$1/.done"
	rm -rf "$2"
	mv "$1" "$2"
}
# scratch: an empty directory for one build step, under one work directory
# that is removed on exit (finished builds are moved out of it).
work_root=$(mktemp -d "$cache/.build.XXXXXX")
trap 'chmod -R u+w "$work_root" 2>/dev/null; rm -rf "$work_root"' EXIT
scratch() { mktemp -d "$work_root/XXXXXX"; }
# moddir MODULE@VERSION: the module's source directory in Go's module cache.
moddir() {
	(cd "$(scratch)" && go mod download -json "$1") | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}
timed() { # timed WHAT COMMAND...: runs it, saying how long it took
	local what=$1 start=$SECONDS
	shift
	"$@"
	say "built $what in $((SECONDS - start))s"
}

# dockerd: the engine's version string comes from the source's
# releases/versions.yaml ("next", the release that module version is).
dockerd_dir=$cache/dockerd-$MOBY_VERSION
if ! built "$dockerd_dir"; then
	say "building dockerd from github.com/moby/moby/v2@$MOBY_VERSION (a few minutes) ..."
	src=$(moddir "github.com/moby/moby/v2@$MOBY_VERSION")
	[[ -d $src ]] || die "github.com/moby/moby/v2@$MOBY_VERSION: not found in the module proxy"
	version=${DOCKER_VERSION:-$(sed -n 's/^  next: "\(.*\)"$/\1/p' "$src/releases/versions.yaml" 2>/dev/null)}
	[[ -n $version ]] || die "no engine version in $src/releases/versions.yaml: set DOCKER_VERSION"
	tmp=$(scratch)
	timed "dockerd $version" env GOBIN="$tmp" go install -trimpath \
		-ldflags "-s -w -X github.com/moby/moby/v2/dockerversion.Version=$version -X github.com/moby/moby/v2/dockerversion.GitCommit=$MOBY_VERSION" \
		"github.com/moby/moby/v2/cmd/dockerd@$MOBY_VERSION"
	echo "$version" >"$tmp/VERSION"
	finish "$tmp" "$dockerd_dir"
fi

runc_dir=$cache/runc-$RUNC_VERSION
if ! built "$runc_dir"; then
	say "building runc $RUNC_VERSION (cgo, seccomp) ..."
	tmp=$(scratch)
	timed "runc $RUNC_VERSION" env GOBIN="$tmp" CGO_ENABLED=1 go install -trimpath -tags seccomp \
		-ldflags "-X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION"
	finish "$tmp" "$runc_dir"
fi

# Compose v5 cannot be `go install`ed (its go.mod has exclude directives):
# build it in a copy of the module's source.
compose_dir=$cache/compose-$COMPOSE_VERSION
if ! built "$compose_dir"; then
	say "building Compose $COMPOSE_VERSION (a few minutes) ..."
	src=$(moddir "github.com/docker/compose/v5@$COMPOSE_VERSION")
	[[ -d $src ]] || die "github.com/docker/compose/v5@$COMPOSE_VERSION: not found in the module proxy"
	tmp=$(scratch)
	work=$(scratch)
	cp -r "$src/." "$work"
	chmod -R u+w "$work"
	(cd "$work" && timed "compose $COMPOSE_VERSION" env CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION" -o "$tmp/docker-compose" ./cmd)
	finish "$tmp" "$compose_dir"
fi

# The engine the tests run: one directory with dockerd, the runc it needs
# first in its PATH, and its version.
engine=$cache/engine
new=$(scratch)
chmod 0755 "$new"
ln -s "$dockerd_dir/dockerd" "$new/dockerd"
ln -s "$runc_dir/runc" "$new/runc"
cp "$dockerd_dir/VERSION" "$new/VERSION"
echo "$MOBY_VERSION $RUNC_VERSION" >"$new/SOURCE"
if ! diff -r --no-dereference "$new" "$engine" >/dev/null 2>&1; then
	rm -rf "$engine"
	cp -a "$new" "$engine"
fi

# Compose v2 as a docker CLI plugin. A docker-compose plugin that this
# script did not install is left alone.
mkdir -p "$plugins"
link=$plugins/docker-compose
if [[ -L $link && $(readlink "$link") == "$cache"/compose-* || ! -e $link && ! -L $link ]]; then
	ln -sfn "$compose_dir/docker-compose" "$link"
elif [[ $(readlink "$link" 2>/dev/null) != "$compose_dir/docker-compose" ]]; then
	say "note: $link is not this script's; leaving it (the tests use whatever docker compose runs)"
fi

say "Docker Engine $(cat "$engine/VERSION") in $engine ($("$engine/runc" --version | head -1)); $("$link" version 2>/dev/null || echo "compose: $link does not run")"
