#!/usr/bin/env bash
# Builds the managed plugin's root filesystem in ROOTFS (the repository's
# rootfs/) and the bundle `docker plugin create` takes in OUTDIR:
# OUTDIR/config.json and OUTDIR/rootfs. The fixed skeleton of rootfs/ is in
# git: the mount points (each holding a .keep file, left out of the bundle)
# and the few /etc files the plugin needs. What this adds is not: the static
# snapvol binary and mkfs.btrfs (the one program the local backend execs,
# once, to format a new pool file) with the shared libraries ldd names.
# Nothing is fetched: the files come from this host (Debian's btrfs-progs).
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
[[ -n $mkfs ]] || { echo "mkfs.btrfs not found: apt-get install -y btrfs-progs" >&2; exit 1; }
[[ -x $bin ]] || { echo "$bin missing: run make build" >&2; exit 1; }

[[ -f $rootfs/etc/passwd && -d $rootfs/mnt/snapvol ]] || { echo "$rootfs lacks the plugin's skeleton (rootfs/etc, rootfs/mnt/snapvol ...): check rootfs/ out from git" >&2; exit 1; }
clean "$rootfs"

install -m 0755 "$bin" "$rootfs/snapvol"

# mkfs.btrfs and its libraries, at the paths the host's loader resolves.
copy() { # copy a file to the same path in the rootfs, following symlinks
	local src=$1
	mkdir -p "$rootfs$(dirname "$src")"
	cp -L "$src" "$rootfs$src"
}
real_mkfs=$(readlink -f "$mkfs")
copy "$real_mkfs"
if [[ $real_mkfs != /usr/sbin/mkfs.btrfs ]]; then
	mkdir -p "$rootfs/usr/sbin" && ln -sf "$real_mkfs" "$rootfs/usr/sbin/mkfs.btrfs"
fi
while read -r lib; do
	copy "$lib"
done < <(ldd "$real_mkfs" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)

# git keeps no directory modes.
chmod 1777 "$rootfs/tmp"

rm -rf "$out"
mkdir -p "$out"
cp "$config" "$out/config.json"
cp -a "$rootfs" "$out/rootfs"
find "$out/rootfs" -name .keep -type f -delete

# Fail here, not at enable time, if the copied mkfs.btrfs cannot run.
if [[ $(id -u) == 0 ]] && command -v chroot >/dev/null; then
	chroot "$out/rootfs" /usr/sbin/mkfs.btrfs --version >/dev/null || { echo "mkfs.btrfs does not run inside $rootfs" >&2; exit 1; }
fi
