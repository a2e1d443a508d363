#!/usr/bin/env bash
# Stops the private PostgreSQL cluster scripts/pg-up.sh started, by the PID
# it recorded (fast shutdown, then SIGKILL after 10 s), and removes its data.
#
# Usage: scripts/pg-down.sh [--dir DIR] [--keep] [--crash]
#
#   --dir DIR   its state directory (default /tmp/tessera-pg, env TESSERA_PG_DIR)
#   --keep      keep the data directory
#   --crash     stop it as a crash would (immediate shutdown, SIGQUIT: no
#               checkpoint, recovery from the WAL at the next start); keeps
#               the data (scripts/pg-up.sh --restart starts it again)
set -euo pipefail

dir="${TESSERA_PG_DIR:-/tmp/tessera-pg}"
keep=0
signal=INT
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) dir="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --crash) keep=1; signal=QUIT; shift ;;
        *) echo "pg-down.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

pidfile="$dir/postgres.pid"
if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        # SIGINT is PostgreSQL's fast shutdown, SIGQUIT its immediate one.
        kill -"$signal" "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
fi
if [ "$keep" -eq 0 ]; then
    rm -rf "$dir/data" "$dir/url"
fi
