#!/usr/bin/env bash
# Builds the managed plugin's root filesystem in ROOTFS (the repository's
# rootfs/: only rootfs/.keep is in git) and the bundle `docker plugin create`
# takes in OUTDIR: OUTDIR/config.json and OUTDIR/rootfs. The rootfs holds the
# static snapvol binary, mkfs.btrfs (the one program the local backend execs,
# once, to format a new pool file) with the shared libraries ldd names, and
# the few directories and /etc files the plugin needs. Nothing is fetched: the
# files come from this host (Debian's btrfs-progs).
#
#   scripts/plugin-rootfs.sh BINARY CONFIG ROOTFS OUTDIR
set -euo pipefail

bin=$1 config=$2 rootfs=$3 out=$4
mkfs=$(command -v mkfs.btrfs || true)
[[ -n $mkfs ]] || { echo "mkfs.btrfs not found: apt-get install -y btrfs-progs" >&2; exit 1; }
[[ -x $bin ]] || { echo "$bin missing: run make build" >&2; exit 1; }

# Start from the skeleton: everything in ROOTFS but .keep is built here.
mkdir -p "$rootfs"
find "$rootfs" -mindepth 1 -maxdepth 1 ! -name .keep -exec rm -rf {} +

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

# Mount points and directories (runc would make most of them; having them in
# the bundle keeps the layout explicit).
mkdir -p "$rootfs"/{dev,proc,sys,tmp,etc,run/docker/plugins,mnt/snapvol,var/lib/snapvol}
chmod 1777 "$rootfs/tmp"
# /etc: the host's hosts and resolv.conf are bound over these (network host);
# nsswitch.conf makes Go's resolver read /etc/hosts first for PX_ENDPOINT.
: >"$rootfs/etc/hosts"
: >"$rootfs/etc/resolv.conf"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/snapvol\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"

rm -rf "$out"
mkdir -p "$out"
cp "$config" "$out/config.json"
cp -a "$rootfs" "$out/rootfs"
rm -f "$out/rootfs/.keep"

# Fail here, not at enable time, if the copied mkfs.btrfs cannot run.
if [[ $(id -u) == 0 ]] && command -v chroot >/dev/null; then
	chroot "$out/rootfs" /usr/sbin/mkfs.btrfs --version >/dev/null || { echo "mkfs.btrfs does not run inside $rootfs" >&2; exit 1; }
fi
