#!/usr/bin/env bash
# Makes a small image from Debian's busybox-static with `docker import`, in
# the engine `docker` reaches: no registry, no network.
#
#   scripts/busybox-image.sh [IMAGE]      (default snapvol-busybox:latest)
set -euo pipefail

image=${1:-snapvol-busybox:latest}
docker=${DOCKER:-docker}
busybox=/bin/busybox
[[ -x $busybox ]] || { echo "$busybox not found: apt-get install -y busybox-static" >&2; exit 1; }
# Debian's busybox package is dynamically linked; the image has no libc.
if ldd "$busybox" >/dev/null 2>&1; then
	echo "$busybox is dynamically linked: apt-get install -y busybox-static" >&2
	exit 1
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"/{bin,etc,tmp,data,proc,sys,dev,root}
chmod 1777 "$dir/tmp"
cp "$busybox" "$dir/bin/busybox"
for applet in $("$busybox" --list); do
	[[ $applet == busybox ]] || ln -s busybox "$dir/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$dir/etc/passwd"
printf 'root:x:0:\n' >"$dir/etc/group"
tar --numeric-owner -C "$dir" -c . | $docker import -c 'ENV PATH=/bin' -c 'CMD ["sh"]' - "$image" >/dev/null
echo "$image"
