#!/usr/bin/env bash
# Makes a PostgreSQL image from this host's Debian packages with `docker
# import`, in the engine `docker` reaches: no registry, no network. The image
# holds the server and client programs of /usr/lib/postgresql/VERSION, the
# extension libraries (amcheck among them), /usr/share/postgresql/VERSION,
# the shared libraries ldd names for all of them, the time zone data, and a
# static busybox for the shell. Its entrypoint (docker-entrypoint below)
# initializes PGDATA if it is empty and runs postgres as the user postgres
# (uid 999), as PID 1, with page checksums on.
#
#   scripts/postgres-image.sh [IMAGE]      (default snapvol-postgres:15)
#
# Needs: apt-get install -y postgresql-15 busybox-static (PG_VERSION picks
# another installed major version).
set -euo pipefail

image=${1:-snapvol-postgres:15}
docker=${DOCKER:-docker}
ver=${PG_VERSION:-15}
pg=/usr/lib/postgresql/$ver
share=/usr/share/postgresql/$ver
busybox=/bin/busybox

fail() { echo "$*" >&2; exit 1; }
[[ -x $pg/bin/postgres ]] || fail "$pg/bin/postgres not found: apt-get install -y postgresql-$ver"
[[ -d $share ]] || fail "$share not found: apt-get install -y postgresql-$ver"
[[ -x $busybox ]] || fail "$busybox not found: apt-get install -y busybox-static"
if ldd "$busybox" >/dev/null 2>&1; then
	fail "$busybox is dynamically linked: apt-get install -y busybox-static"
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

copy() { # a file to the same path in the rootfs, following symlinks
	mkdir -p "$dir$(dirname "$1")"
	cp -L "$1" "$dir$1"
}

# Programs and the server's loadable modules (JIT left out: jit=off).
progs=(postgres initdb pg_ctl pg_controldata pg_isready pg_amcheck pg_waldump pg_checksums psql pgbench)
objects=()
for p in "${progs[@]}"; do
	[[ -x $pg/bin/$p ]] || fail "$pg/bin/$p not found: apt-get install -y postgresql-$ver"
	objects+=("$pg/bin/$p")
done
for so in "$pg"/lib/*.so; do
	[[ $(basename "$so") == llvmjit.so ]] || objects+=("$so")
done
for f in "${objects[@]}"; do
	copy "$f"
done
# Their shared libraries, at the paths the host's loader resolves.
while read -r lib; do
	copy "$lib"
done < <(ldd "${objects[@]}" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && NF == 2 {print $1}' | sort -u)
[[ -e $dir/lib64/ld-linux-x86-64.so.2 || $(uname -m) != x86_64 ]] || fail "the dynamic loader was not found by ldd"

mkdir -p "$dir/usr/share/postgresql"
cp -a "$share" "$dir/usr/share/postgresql/"
rm -rf "$dir$share/man"
mkdir -p "$dir/usr/share"
cp -a /usr/share/zoneinfo "$dir/usr/share/zoneinfo"

# A shell and the usual tools.
mkdir -p "$dir/bin"
cp "$busybox" "$dir/bin/busybox"
for applet in $("$busybox" --list); do
	[[ -e $dir/bin/$applet ]] || ln -s busybox "$dir/bin/$applet"
done

# Users (initdb refuses to run as root), and the directories postgres uses.
mkdir -p "$dir"/{etc,tmp,proc,sys,dev,root,run/postgresql,var/lib/postgresql/data,usr/local/bin}
chmod 1777 "$dir/tmp"
ln -s ../run "$dir/var/run"
printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n' >"$dir/etc/passwd"
printf 'root:x:0:\npostgres:x:999:\n' >"$dir/etc/group"
chown -R 999:999 "$dir/run/postgresql" "$dir/var/lib/postgresql"
chmod 0700 "$dir/var/lib/postgresql/data"

cat >"$dir/usr/local/bin/docker-entrypoint" <<'EOF'
#!/bin/sh
# Runs postgres on PGDATA as the user postgres, as PID 1 (exec all the way):
# a volume mounted at PGDATA is made the postgres user's first, and an empty
# one is initialized. Arguments go to postgres (e.g. -c fsync=on); a first
# argument that is not an option is run as a command instead.
set -e
case ${1:-} in
'' | -*) ;;
*) exec "$@" ;;
esac
if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA"
	chown postgres:postgres "$PGDATA"
	chmod 0700 "$PGDATA"
	# busybox su has no argument pass-through that survives its option
	# parsing: quote the arguments into the command.
	cmd="exec $0"
	for a in "$@"; do
		cmd="$cmd '$(printf %s "$a" | sed "s/'/'\\\\''/g")'"
	done
	exec su -s /bin/sh postgres -c "$cmd"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	initdb --data-checksums --locale=C --encoding=UTF8 --auth=trust --username=postgres -D "$PGDATA" >/tmp/initdb.log 2>&1 || {
		cat /tmp/initdb.log >&2
		exit 1
	}
	echo "initialized $PGDATA"
fi
exec postgres -D "$PGDATA" -c listen_addresses= -c unix_socket_directories=/run/postgresql -c jit=off "$@"
EOF
chmod 0755 "$dir/usr/local/bin/docker-entrypoint"

# Fail here, not in a container, if the copied server cannot run.
if [[ $(id -u) == 0 ]] && command -v chroot >/dev/null; then
	chroot "$dir" "$pg/bin/postgres" --version >/dev/null || fail "postgres does not run inside the image's rootfs"
fi

tar --numeric-owner -C "$dir" -c . | $docker import \
	-c "ENV PATH=$pg/bin:/usr/local/bin:/bin" \
	-c 'ENV PGDATA=/var/lib/postgresql/data' \
	-c 'ENV PGHOST=/run/postgresql' \
	-c 'ENV PGUSER=postgres' \
	-c 'ENV TZ=UTC' \
	-c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint"]' \
	- "$image" >/dev/null
echo "$image"
