#!/usr/bin/env bash
# Installs or removes the snapvol managed plugin in the engine `docker`
# reaches (DOCKER_HOST and docker contexts are honoured).
#
#   scripts/plugin-install.sh install DOCKER NAME BUNDLE STATE_DIR [KEY=VALUE...]
#   scripts/plugin-install.sh uninstall DOCKER NAME
#
# Docker refuses to disable a volume plugin while any of its volumes exists;
# FORCE=1 disables it anyway (docker plugin disable -f). Volumes, clones and
# data live in the state directory and are back when the plugin is enabled
# again; running containers keep their mounts.
set -euo pipefail

action=$1 docker=$2 name=$3
shift 3

say() { printf '%s\n' "$*"; }
run() { printf '+ %s\n' "$*"; "$@"; }

installed() { $docker plugin inspect --format '{{.Enabled}}' "$name" 2>/dev/null; }

disable() {
	local force=()
	[[ ${FORCE:-} == 1 ]] && force=(-f)
	if ! out=$($docker plugin disable "${force[@]}" "$name" 2>&1); then
		say "$out" >&2
		say "Docker refuses to disable $name while any of its volumes exists (docker volume ls -f driver=$name)." >&2
		say "Run again with FORCE=1 to disable it anyway: volumes and data stay in its state directory." >&2
		exit 1
	fi
	say "disabled $name${force:+ (forced)}"
}

remove() {
	if [[ ${FORCE:-} == 1 ]]; then
		run $docker plugin rm -f "$name"
	elif ! $docker plugin rm "$name"; then
		say "Docker refuses to remove $name while any of its volumes exists; run again with FORCE=1." >&2
		exit 1
	fi
}

case $action in
install)
	bundle=$1 state=$2
	shift 2
	[[ -f $bundle/config.json && -x $bundle/rootfs/snapvol ]] || { say "no plugin bundle in $bundle: run make plugin" >&2; exit 1; }
	[[ $state == /* ]] || { say "STATE_DIR=$state must be an absolute path on the Docker host" >&2; exit 1; }
	$docker version --format '{{.Server.Version}}' >/dev/null || { say "no Docker engine reachable (DOCKER_HOST=${DOCKER_HOST:-unset})" >&2; exit 1; }
	# The state directory is bound into the plugin and must exist on the
	# engine's host; it can be made here when that host is this one.
	case ${DOCKER_HOST:-unix://} in
	unix://*) mkdir -p "$state" ;;
	*) say "note: $state must exist on the Docker host (DOCKER_HOST=$DOCKER_HOST)" ;;
	esac
	case $(installed) in
	true)
		say "replacing the installed $name plugin (its volumes and data stay in its state directory)"
		disable
		remove
		;;
	false) remove ;;
	esac
	run $docker plugin create "$name" "$bundle"
	run $docker plugin set "$name" state.source="$state" "$@"
	run $docker plugin enable "$name"
	$docker plugin ls --filter enabled=true | sed -n "1p;/ ${name%%:*}:/p"
	;;
uninstall)
	case $(installed) in
	"") say "$name is not installed"; exit 0 ;;
	true) disable ;;
	esac
	remove
	say "removed $name; its state directory (volumes, pool file) is left in place"
	;;
*)
	say "usage: $0 install|uninstall ..." >&2
	exit 2
	;;
esac
