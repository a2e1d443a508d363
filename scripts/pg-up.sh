#!/usr/bin/env bash
# Starts a private PostgreSQL cluster for Tessera's tests and trials: its own
# data directory, an unprivileged owner, a free loopback port, no password
# (trust, loopback and its own socket directory only).
#
# Usage: scripts/pg-up.sh [--dir DIR] [--restart]
#
#   --dir DIR   state directory: data/, socket, postgres.log, postgres.pid,
#               url, port (default /tmp/tessera-pg, env TESSERA_PG_DIR)
#   --restart   start the cluster already in DIR again (after a crash or
#               pg-down.sh --keep) on its port, its data as it is
#
# Installs Debian's postgresql when its server binaries are missing (as
# root, or through sudo). As root the cluster belongs to the unprivileged
# user `tessera-pg` (created when missing): PostgreSQL refuses to run as
# root. An earlier cluster of ours in DIR is stopped and replaced.
#
# Prints the connection URL (postgres://tessera@127.0.0.1:PORT/tessera) on
# success and writes it to DIR/url; the server's PID is in DIR/postgres.pid.
# Stop it with scripts/pg-down.sh [--dir DIR]. Exit status non-zero on
# failure, with the tail of the server's log on stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${TESSERA_PG_DIR:-/tmp/tessera-pg}"
restart=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) dir="$2"; shift 2 ;;
        --restart) restart=1; shift ;;
        *) echo "pg-up.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

bindir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

install() {
    # One installer at a time (clusters started together by parallel
    # tests), and none when another one has installed it meanwhile.
    if [ -n "$(bindir)" ] && [ -x "$(bindir)/initdb" ]; then return 0; fi
    echo "pg-up.sh: installing postgresql from Debian's packages" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
        || { as_root apt-get update -q >&2 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
}
if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/initdb" ]; then
    exec 9>/tmp/tessera-pg-install.lock
    flock 9
    install
    flock -u 9
fi
bin="$(bindir)"
[ -x "$bin/initdb" ] || { echo "pg-up.sh: no initdb after installing postgresql" >&2; exit 1; }

run=()
if [ "$(id -u)" -eq 0 ]; then
    run=(runuser -u tessera-pg --)
fi
if [ "$restart" -eq 1 ]; then
    dir="$(cd "$dir" && pwd)"
    port="$(cat "$dir/port")"
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null \
        || { echo "pg-up.sh: the server did not start again:" >&2; tail -20 "$dir/postgres.log" >&2; exit 1; }
    head -1 "$dir/data/postmaster.pid" >"$dir/postgres.pid"
    cat "$dir/url"
    exit 0
fi

"$here/pg-down.sh" --dir "$dir" >/dev/null 2>&1 || true
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
rm -rf "$dir/data"

if [ "$(id -u)" -eq 0 ]; then
    # Two clusters started at once on a fresh machine may both create the
    # user: the one that loses finds it made.
    id tessera-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin tessera-pg \
        || id tessera-pg >/dev/null 2>&1
    chown tessera-pg "$dir"
    chmod 0700 "$dir"
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"

"${run[@]}" "$bin/initdb" -D "$dir/data" -U tessera --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { echo "pg-up.sh: initdb failed:" >&2; tail -20 "$dir/initdb.log" >&2; exit 1; }
"${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null \
    || { echo "pg-up.sh: the server did not start:" >&2; tail -20 "$dir/postgres.log" >&2; exit 1; }
head -1 "$dir/data/postmaster.pid" >"$dir/postgres.pid"
"${run[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U tessera tessera \
    || { echo "pg-up.sh: createdb failed" >&2; tail -20 "$dir/postgres.log" >&2; exit 1; }
url="postgres://tessera@127.0.0.1:$port/tessera"
echo "$port" >"$dir/port"
echo "$url" >"$dir/url"
echo "$url"
