#!/usr/bin/env bash
# Stops the pcscd started by scripts/pcscd-up.sh, by the PID it recorded.
# Never touches a pcscd it did not start.
#
# Usage: scripts/pcscd-down.sh [--dir DIR] [--timeout SECONDS] [--quiet]
#   --dir DIR     state directory given to pcscd-up.sh (default
#                 /tmp/tessera-pcscd, env TESSERA_PCSCD_DIR)
#   --timeout S   seconds to wait after SIGTERM before SIGKILL (default 5)
#
# Exit status 0 when it is stopped or was not running.
set -euo pipefail

dir="${TESSERA_PCSCD_DIR:-/tmp/tessera-pcscd}"
timeout=5
quiet=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) dir="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --quiet) quiet=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "pcscd-down: unknown argument $1" >&2; exit 2 ;;
    esac
done

say() { [ "$quiet" = 1 ] || echo "pcscd-down: $*" >&2; }

pidfile="$dir/pcscd.pid"
if [ ! -f "$pidfile" ]; then
    say "not running (no $pidfile)"
    exit 0
fi
pid="$(cat "$pidfile")"
if ! [[ "$pid" =~ ^[0-9]+$ ]]; then
    say "ignoring malformed $pidfile"
    rm -f "$pidfile"
    exit 0
fi
# Only a pcscd process: the PID may have been reused since.
if ! kill -0 "$pid" 2>/dev/null || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != pcscd ]; then
    say "not running (stale pid $pid)"
    rm -f "$pidfile"
    exit 0
fi

kill -TERM "$pid" 2>/dev/null || true
steps=$(( timeout * 20 ))
for ((i = 0; i < steps; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
done
if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid ignored SIGTERM, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
fi
rm -f "$pidfile"
say "stopped pcscd pid $pid"
