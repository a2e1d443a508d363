#!/usr/bin/env bash
# Starts the back office on PostgreSQL: `tessera office serve` with the
# office's books in a PostgreSQL database, which several servers may share.
#
# Usage: scripts/office-postgres.sh DIR [office serve options…]
#
#   DIR   the office directory (`tessera office init` makes it when
#         missing)
#
# Which database: the one DIR/books.toml names once the books moved there;
# the first time, $TESSERA_POSTGRES (postgres://…) when set, else a private
# local cluster in DIR.postgres (scripts/pg-up.sh: Debian's postgresql
# installed when missing, its own port and data), started again when it is
# not running. The first time, the office's SQLite ledger is copied there
# and proved equal (`tessera office migrate`); from then on books.toml
# names the database and the SQLite ledger is no longer written.
#
# The tessera binary is built (release) unless $TESSERA_BIN names one.
# Stop the office with Ctrl-C; the local cluster keeps running
# (scripts/pg-down.sh --dir DIR.postgres stops it).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: scripts/office-postgres.sh DIR [office serve options…]" >&2; exit 2; }
office="$(realpath -m "$1")"
shift
cd "$(dirname "$0")/.."
if [ -n "${TESSERA_BIN:-}" ]; then
    tessera="$TESSERA_BIN"
else
    cargo build --release --quiet --bin tessera
    tessera="$PWD/target/release/tessera"
fi
pgdir="${office%/}.postgres"

local_cluster() {
    # Running already (its PID alive), started again, or made.
    if [ -s "$pgdir/postgres.pid" ] && kill -0 "$(cat "$pgdir/postgres.pid")" 2>/dev/null; then
        cat "$pgdir/url"
    elif [ -d "$pgdir/data" ]; then
        ./scripts/pg-up.sh --dir "$pgdir" --restart
    else
        ./scripts/pg-up.sh --dir "$pgdir"
    fi
}

[ -e "$office/issuer-keys.json" ] || "$tessera" office init --dir "$office" >&2
if [ -e "$office/books.toml" ]; then
    if [ -d "$pgdir/data" ] && grep -qF "$(cat "$pgdir/url" 2>/dev/null || echo none)" "$office/books.toml"; then
        local_cluster >/dev/null
    fi
else
    url="${TESSERA_POSTGRES:-}"
    if [ -z "$url" ]; then
        url="$(local_cluster)"
    fi
    echo "office-postgres.sh: moving the books of $office to $url" >&2
    "$tessera" office migrate --dir "$office" --to "$url" >&2
fi
exec "$tessera" office serve --dir "$office" --postgres "$@"
