#!/usr/bin/env bash
# Builds the managed plugin's root filesystem in ROOTFS (the repository's
# rootfs/) and the bundle `docker plugin create` takes in OUTDIR:
# OUTDIR/config.json and OUTDIR/rootfs. The fixed skeleton of rootfs/ is in
# git: the mount points (each holding a .keep file, left out of the bundle)
# and the few /etc files the plugin needs. What this adds is not: the static
# snapvol binary, and the two btrfs-progs programs the local backend execs
# with the shared libraries ldd names: mkfs.btrfs (once, to format a new
# pool file) and btrfs (send and receive, for runner fleets: snapvol push on
# a production host, pulls on a CI host; storage/local/send.go). The bundle
# also gets this host's CA certificates, so a bundle with network
# (config.fleet.json) can reach a registry over HTTPS.
# Nothing is fetched: the files come from this host (Debian's btrfs-progs
# and ca-certificates).
#
#   scripts/plugin-rootfs.sh BINARY CONFIG ROOTFS OUTDIR
#   scripts/plugin-rootfs.sh --clean ROOTFS     remove what a build added
set -euo pipefail

# The top-level entries of the skeleton; everything else in ROOTFS is built.
skeleton=(etc dev proc sys tmp run mnt var)
clean() {
	local args=()
	for s in "${skeleton[@]}"; do args+=(! -name "$s"); done
	find "$1" -mindepth 1 -maxdepth 1 "${args[@]}" -exec rm -rf {} +
}
if [[ ${1:-} == --clean ]]; then
	clean "$2"
	exit 0
fi

bin=$1 config=$2 rootfs=$3 out=$4
mkfs=$(command -v mkfs.btrfs || true)
btrfs=$(command -v btrfs || true)
[[ -n $mkfs && -n $btrfs ]] || { echo "mkfs.btrfs or btrfs not found: apt-get install -y btrfs-progs" >&2; exit 1; }
cacerts=/etc/ssl/certs/ca-certificates.crt
[[ -s $cacerts ]] || { echo "$cacerts not found: apt-get install -y ca-certificates" >&2; exit 1; }
[[ -x $bin ]] || { echo "$bin missing: run make build" >&2; exit 1; }

[[ -f $rootfs/etc/passwd && -d $rootfs/mnt/snapvol ]] || { echo "$rootfs lacks the plugin's skeleton (rootfs/etc, rootfs/mnt/snapvol ...): check rootfs/ out from git" >&2; exit 1; }
clean "$rootfs"

install -m 0755 "$bin" "$rootfs/snapvol"

# mkfs.btrfs and btrfs with their libraries, at the paths the host's
# loader resolves; each at the path the plugin execs it by (PATH holds
# /usr/sbin and /usr/bin; Debian has both in /bin too).
copy() { # copy a file to the same path in the rootfs, following symlinks
	local src=$1
	mkdir -p "$rootfs$(dirname "$src")"
	cp -L "$src" "$rootfs$src"
}
program() { # program PATH_IN_ROOTFS FOUND
	local want=$1 real
	real=$(readlink -f "$2")
	copy "$real"
	if [[ $real != "$want" ]]; then
		mkdir -p "$rootfs$(dirname "$want")" && ln -sf "$real" "$rootfs$want"
	fi
	ldd "$real" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
}
{
	program /usr/sbin/mkfs.btrfs "$mkfs"
	program /usr/bin/btrfs "$btrfs"
} | sort -u | while read -r lib; do copy "$lib"; done

# git keeps no directory modes.
chmod 1777 "$rootfs/tmp"

rm -rf "$out"
mkdir -p "$out"
cp "$config" "$out/config.json"
cp -a "$rootfs" "$out/rootfs"
find "$out/rootfs" -name .keep -type f -delete
# Where Go looks first for the roots of trust (in the bundle only: rootfs/etc
# is the skeleton kept in git).
mkdir -p "$out/rootfs/etc/ssl/certs"
cp -L "$cacerts" "$out/rootfs/etc/ssl/certs/ca-certificates.crt"

# Fail here, not at enable time, if a copied program cannot run.
if [[ $(id -u) == 0 ]] && command -v chroot >/dev/null; then
	for p in /usr/sbin/mkfs.btrfs /usr/bin/btrfs; do
		chroot "$out/rootfs" "$p" --version >/dev/null || { echo "$p does not run inside $rootfs" >&2; exit 1; }
	done
fi
