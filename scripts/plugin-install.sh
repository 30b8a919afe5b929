#!/usr/bin/env bash
# Installs or removes the snapvol managed plugin in the engine `docker`
# reaches (DOCKER_HOST and docker contexts are honoured).
#
#   scripts/plugin-install.sh install DOCKER NAME BUNDLE STATE_DIR [KEY=VALUE...]
#   scripts/plugin-install.sh uninstall DOCKER NAME
#
# Replacing or removing an enabled plugin disables it first. While the
# plugin has volumes (docker volume ls --filter driver=NAME:latest) this
# script refuses unless FORCE=1: it checks the volumes itself, because
# Docker's own refusal depends on references it does not take for every
# volume (none for a name the plugin claimed). With FORCE=1 it disables the
# plugin anyway (docker plugin disable -f): volumes, clones and data live in
# the state directory and are back when the plugin is enabled again, and
# running containers keep their mounts.
set -euo pipefail

action=$1 docker=$2 name=$3
shift 3

say() { printf '%s\n' "$*"; }
run() { printf '+ %s\n' "$*"; "$@"; }

# Docker names a plugin installed as NAME "NAME:latest", and so do its
# volumes' Driver fields.
full=$name
[[ $full == *:* ]] || full=$name:latest

installed() { $docker plugin inspect --format '{{.Enabled}}' "$name" 2>/dev/null; }

# volumes lists the plugin's volumes, as the enabled plugin reports them.
volumes() { $docker volume ls -q --filter "driver=$full"; }

disable() {
	local vols n force=()
	vols=$(volumes) || { say "cannot list the volumes of $name (docker volume ls failed); not disabling it" >&2; exit 1; }
	n=$(grep -c . <<<"$vols" || true)
	if ((n > 0)) && [[ ${FORCE:-} != 1 ]]; then
		say "$name has $n volume(s) in this engine: $(head -n 5 <<<"$vols" | paste -sd ' ')$( ((n > 5)) && echo ' ...')" >&2
		say "Not disabling it: while it is disabled those volumes cannot be mounted, created or removed." >&2
		say "Run again with FORCE=1 to disable it anyway: the volumes and their data stay in its state directory and are back when it is enabled; running containers keep their mounts." >&2
		exit 1
	fi
	((n > 0)) && force=(-f)
	if ! out=$($docker plugin disable "${force[@]}" "$name" 2>&1); then
		say "$out" >&2
		say "docker plugin disable $name failed (it listed $n volumes); FORCE=1 runs docker plugin disable -f." >&2
		exit 1
	fi
	if ((n > 0)); then
		say "disabled $name with -f: its $n volume(s) come back when it is enabled again"
	else
		say "disabled $name (it had no volumes)"
	fi
}

remove() {
	local out
	if [[ ${FORCE:-} == 1 ]]; then
		run $docker plugin rm -f "$name"
	elif ! out=$($docker plugin rm "$name" 2>&1); then
		say "$out" >&2
		say "docker plugin rm $name failed; FORCE=1 runs docker plugin rm -f." >&2
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
	false)
		say "removing the installed $name plugin, which is disabled (its volumes and data stay in its state directory)"
		remove
		;;
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
