#!/usr/bin/env bash
# snapvol demo: a CI test suite runs against a writable clone of production
# data, finds the guestbook entry that broke production, writes to its clone
# freely, and production stays exactly as it was.
#
# Run as root: `make demo`. It uses the Docker engine `docker` reaches, or
# starts a private dockerd if there is none (or DEMO_PRIVATE_ENGINE=1), and
# installs what is missing from Debian's packages: docker.io too when no
# engine is reachable and no dockerd is installed (without starting
# Debian's system service: the demo's engine is a private one).
#
# Knobs: DEMO_PRIVATE_ENGINE=1  always use a private engine
#        DEMO_DOCKERD=PATH      the dockerd a private engine runs (default:
#                               dockerd from PATH); a runc beside it comes
#                               first in its PATH (scripts/test-deps.sh
#                               builds the current engine that way)
#        DEMO_DIR=DIR           where a private engine keeps its data (a new
#                               temporary directory by default)
#        DEMO_BUNDLE=DIR        a plugin bundle already built (default: make plugin)
#        KEEP=1                 leave the private engine running at the end
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=snapvol-busybox:latest
docker=${DOCKER:-docker}

if [[ -t 1 ]]; then b=$'\e[1m' g=$'\e[32m' r=$'\e[31m' n=$'\e[0m'; else b='' g='' r='' n=''; fi
step=0
section() { step=$((step + 1)); printf '\n%s==> %d. %s%s\n' "$b" "$step" "$*" "$n"; }
say() { printf '    %s\n' "$*"; }
show() { printf '    %s$ %s%s\n' "$b" "$*" "$n"; }
# run shows a command and runs it, indenting its output.
run() { show "$*"; "$@" 2>&1 | sed 's/^/      /'; return "${PIPESTATUS[0]}"; }
die() { printf '%sdemo failed: %s%s\n' "$r" "$*" "$n" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run the demo as root (it installs a Docker plugin that mounts a btrfs pool)"

section "Prerequisites"
# The engine: the one docker reaches, else a private dockerd, which needs
# docker.io when there is none.
reachable=0
if [[ ${DEMO_PRIVATE_ENGINE:-} != 1 ]] && command -v "$docker" >/dev/null &&
	timeout 15 $docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
	reachable=1
fi
dockerd_bin=${DEMO_DOCKERD:-dockerd}
missing=()
if ! command -v "$docker" >/dev/null; then
	missing+=(docker.io)
elif [[ $reachable == 0 ]] && ! command -v "$dockerd_bin" >/dev/null; then
	[[ -n ${DEMO_DOCKERD:-} ]] && die "DEMO_DOCKERD=$DEMO_DOCKERD: not found"
	say "no Docker engine reachable (${DOCKER_HOST:-default context}) and no dockerd installed: installing Debian's docker.io"
	missing+=(docker.io)
fi
command -v mkfs.btrfs >/dev/null || missing+=(btrfs-progs)
{ [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing+=(busybox-static)
command -v go >/dev/null || die "Go is needed to build snapvol (https://go.dev/dl)"
if ((${#missing[@]})); then
	command -v apt-get >/dev/null || die "missing: ${missing[*]}; install them and run again"
	say "installing Debian packages: ${missing[*]}"
	# Installing docker.io must not start Debian's system dockerd (its
	# bridge and iptables rules): the demo starts its own.
	policy=/usr/sbin/policy-rc.d made_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	[[ $made_policy == 1 ]] && rm -f "$policy"
	hash -r
fi
client_version=$($docker version --format '{{.Client.Version}}' 2>/dev/null || true)
say "docker client ${client_version:-?}, $(mkfs.btrfs --version | head -1), busybox-static"

# ---------------------------------------------------------------- engine
private=0
engine_dir='' exec_root='' dockerd_pid=''
cleanup() {
	local rc=$?
	if [[ -n $dockerd_pid ]]; then
		if [[ ${KEEP:-} == 1 && $rc == 0 ]]; then
			printf '\nThe private engine keeps running (pid %s). To use it:\n    export DOCKER_HOST=%s\n' "$dockerd_pid" "$DOCKER_HOST"
			return
		fi
		kill -TERM "$dockerd_pid" 2>/dev/null || true
		for _ in $(seq 1 600); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$dockerd_pid" 2>/dev/null || true
		# Unmount what the engine left under its directories, deepest first.
		for d in "$engine_dir" "$exec_root"; do
			[[ -n $d ]] || continue
			awk -v d="$d" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
				while read -r m; do umount -l "$m" 2>/dev/null || true; done
		done
		rm -rf "$exec_root"
		[[ ${DEMO_DIR_MADE:-} == 1 ]] && rm -rf "$engine_dir"
		[[ $rc == 0 ]] && printf '\nThe private engine is stopped and its files are removed.\n'
	fi
	if [[ $rc != 0 && -n $engine_dir && -f $engine_dir/dockerd.log ]]; then
		printf '\nlast lines of the private dockerd log:\n' >&2
		tail -n 30 "$engine_dir/dockerd.log" >&2
	fi
}
trap cleanup EXIT

section "A Docker engine"
if [[ $reachable == 1 ]]; then
	say "using the engine docker reaches (${DOCKER_HOST:-default context}): Docker $($docker version --format '{{.Server.Version}}')"
else
	private=1
	dockerd_bin=$(command -v "$dockerd_bin") || die "no Docker engine reachable and no dockerd to start (apt-get install docker.io)"
	if [[ -n ${DEMO_DIR:-} ]]; then
		engine_dir=$DEMO_DIR
	else
		engine_dir=$(mktemp -d /tmp/snapvol-demo.XXXXXX)
		DEMO_DIR_MADE=1
	fi
	mkdir -p "$engine_dir"/{data,client}
	exec_root=$(mktemp -d /run/svdemo.XXXX) # short: plugin socket paths must fit 108 bytes
	echo '{}' >"$engine_dir/daemon.json"
	export DOCKER_HOST=unix://$engine_dir/docker.sock DOCKER_CONFIG=$engine_dir/client
	say "no engine reachable (or DEMO_PRIVATE_ENGINE=1): starting a private dockerd"
	engine_path=$PATH
	# A runc beside DEMO_DOCKERD is the one that engine needs.
	[[ -n ${DEMO_DOCKERD:-} && -x $(dirname "$dockerd_bin")/runc ]] && engine_path=$(dirname "$dockerd_bin"):$PATH
	show "$dockerd_bin --data-root $engine_dir/data --exec-root $exec_root -H $DOCKER_HOST --bridge=none --iptables=false ..."
	PATH=$engine_path "$dockerd_bin" --config-file "$engine_dir/daemon.json" --data-root "$engine_dir/data" --exec-root "$exec_root" \
		--pidfile "$engine_dir/docker.pid" -H "$DOCKER_HOST" \
		--bridge=none --iptables=false --ip-forward=false --ip-masq=false >"$engine_dir/dockerd.log" 2>&1 &
	dockerd_pid=$!
	for _ in $(seq 1 300); do
		$docker version >/dev/null 2>&1 && break
		kill -0 "$dockerd_pid" 2>/dev/null || die "dockerd exited during start"
		sleep 0.2
	done
	$docker version >/dev/null 2>&1 || die "dockerd did not answer within 60s"
	say "Docker $($docker version --format '{{.Server.Version}}') is up (log: $engine_dir/dockerd.log)"
fi

section "An image without a registry"
if $docker image inspect "$image" >/dev/null 2>&1; then
	say "$image is already there"
else
	say "Debian's busybox-static, imported with docker import:"
	run "$root/scripts/busybox-image.sh" "$image"
fi

section "The snapvol plugin"
bundle=${DEMO_BUNDLE:-$root/build/plugin}
if [[ -z ${DEMO_BUNDLE:-} ]]; then
	run make -s -C "$root" plugin
fi
if [[ $private == 0 ]] && $docker plugin inspect snapvol >/dev/null 2>&1; then
	say "snapvol is already installed in this engine; the demo uses it as it is"
	[[ $($docker plugin inspect --format '{{.Enabled}}' snapvol) == true ]] || run $docker plugin enable snapvol
else
	state=/var/lib/snapvol
	[[ $private == 1 ]] && state=$engine_dir/state
	run "$root/scripts/plugin-install.sh" install "$docker" snapvol "$bundle" "$state" POOL_SIZE=4G
fi

section "Production: app-production, with a guestbook"
if [[ -n $($docker volume ls -q --filter name='^app-production$') ]]; then
	if [[ $($docker volume inspect --format '{{index .Labels "created-by"}}' app-production 2>/dev/null) != snapvol-demo ]]; then
		die "this engine already has a volume app-production that the demo did not make; it will not touch it (DEMO_PRIVATE_ENGINE=1 make demo uses a private engine)"
	fi
	say "removing app-production from an earlier demo"
	$docker volume rm app-production@latest >/dev/null 2>&1 || true
	$docker volume rm app-production >/dev/null
fi
run $docker volume create -d snapvol --label created-by=snapvol-demo app-production
say "the application writes three entries; Zoë typed hers on a phone that sent two stray bytes, 0xFF 0xFE:"
show "docker run --rm --network none -v app-production:/data $image sh -c '<write the guestbook>'"
# $MARK (a sed script) marks the bytes that are not UTF-8, so a terminal
# shows the rest; it is made inside the container (docker run -e would turn
# the bytes into U+FFFD on the way).
markdef='MARK="s/$(printf "\377")/<0xFF>/g; s/$(printf "\376")/<0xFE>/g"'
$docker run --rm --network none -v app-production:/data "$image" sh -c "$markdef"'
	mkdir -p /data/guestbook
	printf "Alice: lovely site!\n" > /data/guestbook/0001.txt
	printf "Bob: see you at the meetup\n" > /data/guestbook/0002.txt
	printf "Zo\303\253: Gr\303\274\303\237e aus K\303\266ln \377\376 (sent from my phone)\n" > /data/guestbook/0003.txt
	echo "CREATE TABLE entries (id int, body text);" > /data/schema.sql
	cd /data && for f in guestbook/*; do printf "%s  " "$f"; sed "$MARK" "$f"; done' 2>&1 | sed 's/^/      /'
test "${PIPESTATUS[0]}" = 0 || die "writing production failed"
sum_prod() { $docker run --rm --network none -v app-production:/data "$image" sh -c 'cd /data && find . -type f | sort | xargs sha256sum | sha256sum | cut -c1-16'; }
before=$(sum_prod)
say "production checksum: $before"

section "A CI job runs its test suite on a clone of production"
say "one name, no snapshot commands: app-production@latest is a fresh writable clone"
show "docker run --rm --network none --volume-driver snapvol -v app-production@latest:/data $image sh -c '<test suite>'"
$docker run --rm --network none --volume-driver snapvol -v app-production@latest:/data "$image" sh -c "$markdef"'
	echo "test suite: checking every guestbook entry is valid UTF-8"
	bad=
	for f in /data/guestbook/*; do
		if grep -q "$(printf "\377")" "$f"; then
			echo "  FAIL ${f#/data/}: malformed UTF-8: $(sed "$MARK" "$f")"
			bad=$f
		else
			echo "  ok   ${f#/data/}"
		fi
	done
	[ -n "$bad" ] || { echo "test suite: the bad entry was not found"; exit 1; }
	echo "test suite: found the entry that broke production: ${bad#/data/}"
	echo "test suite: it writes to its clone: repairs that entry, adds one, deletes schema.sql"
	sed -i "s/$(printf "\377\376")/(fixed)/" "$bad"
	echo "Test: written by CI" > /data/guestbook/0004.txt
	rm /data/schema.sql
	cd /data && for f in guestbook/*; do printf "  clone: %s  " "$f"; sed "$MARK" "$f"; done
	[ -e schema.sql ] || echo "  clone: schema.sql deleted"' 2>&1 | sed 's/^/      /'
test "${PIPESTATUS[0]}" = 0 || die "the test suite container failed"

section "Production is unchanged"
after=$(sum_prod)
show "docker run --rm --network none -v app-production:/data $image sh -c '<list production>'"
$docker run --rm --network none -v app-production:/data "$image" sh -c "$markdef"'
	cd /data && for f in guestbook/* schema.sql; do printf "  production: %s  " "$f"; sed "$MARK" "$f"; done' 2>&1 | sed 's/^/      /'
say "production checksum before: $before"
say "production checksum after:  $after"
[[ $before == "$after" ]] || die "production changed"
say "${g}production is unchanged${n}: the clone took every write"

section "The clone, as Docker sees it"
run $docker volume ls
say "the Status says where the clone comes from and what state it is in:"
run $docker volume inspect app-production@latest

section "Removing the clone"
run $docker volume rm app-production@latest
run $docker volume ls
# (docker volume inspect would still answer: snapvol claims names it could
# clone, so a later run -v app-production@latest makes a fresh clone.)
if $docker volume ls -q | grep -qx 'app-production@latest'; then die "the clone is still listed"; fi
say "the clone is removed, with its storage; app-production is still there"

printf '\n%sDone.%s The same with a tag, with the design card'"'"'s form, or from compose:\n' "$b" "$n"
say "docker run --rm --mount type=volume,src=snap:app-production@latest+t,dst=/data,volume-driver=snapvol $image ls /data"
if [[ $private == 0 ]]; then
	say "clean up: docker volume rm app-production && make uninstall FORCE=1"
fi
