#!/usr/bin/env bash
# Starts a private pcscd with Tessera's own reader configuration: N virtual
# vpcd readers (default 2) on TCP ports 35963, 35964, ... that a virtual card
# (`tessera card serve`, or tessera_simulator::vpcd::serve) connects to.
#
# Usage: scripts/pcscd-up.sh [--readers N] [--dir DIR] [--timeout SECONDS]
#
#   --readers N     number of virtual readers (default 2, env TESSERA_READERS)
#   --dir DIR       state directory: generated reader.conf.d, driver copies,
#                   pcscd.pid, pcscd.log (default /tmp/tessera-pcscd, env
#                   TESSERA_PCSCD_DIR)
#   --timeout S     how long to wait for readiness (default 15, env
#                   TESSERA_PCSCD_TIMEOUT)
#
# How vpcd picks its ports: a reader.conf entry's DEVICENAME "/dev/null:PORT"
# (and CHANNELID, its twin for drivers opened by channel) gives the base port;
# the driver exposes two slots per entry, slot s listening on PORT+s. All
# slots of one entry share static state inside the driver library, so two
# entries loading the same .so file would clobber each other: entry k gets
# its own copy of the library and base port 35963+2k. pcscd names the
# readers "Virtual PCD 00 00" (port 35963), "Virtual PCD 00 01" (35964),
# "Virtual PCD 1 00 00" (35965), "Virtual PCD 1 00 01" (35966), ...
#
# A pcscd that is already running and not ours (for example the system
# service, socket-activated by systemd) is stopped through systemctl when
# systemd runs; otherwise the script refuses to start, unless
# TESSERA_PCSCD_TAKEOVER=1, in which case it is killed. Our own previous
# instance (PID file in DIR) is stopped and replaced.
#
# Ready means: the pcscd process is alive, its client socket exists and every
# vpcd port is listening (checked with `ss -ltn`, never by connecting: a
# connection to a vpcd port counts as a card insertion).
#
# Prints the PID on success. Exit status non-zero on failure, with the tail of
# pcscd's log on stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readers="${TESSERA_READERS:-2}"
dir="${TESSERA_PCSCD_DIR:-/tmp/tessera-pcscd}"
timeout="${TESSERA_PCSCD_TIMEOUT:-15}"
base_port=35963

while [ $# -gt 0 ]; do
    case "$1" in
        --readers) readers="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "pcscd-up: unknown argument $1" >&2; exit 2 ;;
    esac
done

if ! [[ "$readers" =~ ^[0-9]+$ ]] || [ "$readers" -lt 1 ] || [ "$readers" -gt 10 ]; then
    echo "pcscd-up: --readers must be between 1 and 10 (pcscd allows 16 reader contexts)" >&2
    exit 2
fi

# Packages: installed on demand (CI starts from a bare Debian with Rust).
find_driver() {
    local f
    for f in /usr/lib/pcsc/drivers/serial/libifdvpcd.so /usr/lib/pcsc/drivers/serial/libifdvpcd.so.*; do
        [ -e "$f" ] && { readlink -f "$f"; return 0; }
    done
    f="$(dpkg -L vsmartcard-vpcd 2>/dev/null | grep -m1 'libifdvpcd\.so' || true)"
    [ -n "$f" ] && [ -e "$f" ] && { readlink -f "$f"; return 0; }
    return 1
}
if ! command -v pcscd >/dev/null 2>&1 || ! find_driver >/dev/null || ! command -v ss >/dev/null 2>&1; then
    "$here/install-deps.sh"
fi
pcscd_bin="$(command -v pcscd || true)"
[ -z "$pcscd_bin" ] && [ -x /usr/sbin/pcscd ] && pcscd_bin=/usr/sbin/pcscd
[ -n "$pcscd_bin" ] || { echo "pcscd-up: pcscd not found after install" >&2; exit 1; }
driver="$(find_driver)" || { echo "pcscd-up: vpcd driver not found after install" >&2; exit 1; }

mkdir -p "$dir"
pidfile="$dir/pcscd.pid"

# Replace our own previous instance.
"$here/pcscd-down.sh" --dir "$dir" --quiet || true

# Any other pcscd would own /run/pcscd/pcscd.comm and the vpcd ports.
# (/proc rather than pgrep: procps may be absent on a bare machine.)
other_pids() {
    local d
    for d in /proc/[0-9]*; do
        [ "$(cat "$d/comm" 2>/dev/null)" = pcscd ] && echo "${d#/proc/}"
    done
    return 0
}
if [ -n "$(other_pids)" ]; then
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        echo "pcscd-up: stopping the system pcscd service (systemd)" >&2
        systemctl stop pcscd.socket pcscd.service >/dev/null 2>&1 || true
    fi
fi
if [ -n "$(other_pids)" ]; then
    if [ "${TESSERA_PCSCD_TAKEOVER:-0}" = 1 ]; then
        for p in $(other_pids); do
            echo "pcscd-up: TESSERA_PCSCD_TAKEOVER=1, stopping pcscd pid $p" >&2
            kill "$p" 2>/dev/null || true
        done
        for _ in $(seq 50); do [ -z "$(other_pids)" ] && break; sleep 0.1; done
    else
        echo "pcscd-up: another pcscd is running (pid $(other_pids | tr '\n' ' '));" \
            "stop it or set TESSERA_PCSCD_TAKEOVER=1" >&2
        exit 1
    fi
fi
if [ -n "$(other_pids)" ]; then
    echo "pcscd-up: pcscd pid $(other_pids | tr '\n' ' ') would not stop" >&2
    exit 1
fi

# The vpcd ports must be free, or the driver cannot listen.
entries=$(( (readers + 1) / 2 ))
ports=()
for ((k = 0; k < entries; k++)); do
    ports+=( $((base_port + 2 * k)) )
    [ $((2 * k + 1)) -lt "$readers" ] && ports+=( $((base_port + 2 * k + 1)) )
done
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q LISTEN; }
for p in "${ports[@]}"; do
    if listening "$p"; then
        echo "pcscd-up: TCP port $p is already in use" >&2
        exit 1
    fi
done

# Generate the reader configuration: one entry per pair of readers, each with
# its own copy of the driver library.
conf="$dir/reader.conf.d"
drivers="$dir/drivers"
rm -rf "$conf" "$drivers"
mkdir -p "$conf" "$drivers"
for ((k = 0; k < entries; k++)); do
    port=$((base_port + 2 * k))
    lib="$drivers/libifdvpcd-$k.so"
    cp "$driver" "$lib"
    # Distinct names: pcscd numbers same-named readers per driver, so equal
    # names from different driver copies would all read "... 00 00".
    name="Virtual PCD"
    [ "$k" -gt 0 ] && name="Virtual PCD $k"
    printf 'FRIENDLYNAME "%s"\nDEVICENAME   /dev/null:0x%X\nLIBPATH      %s\nCHANNELID    0x%X\n' \
        "$name" "$port" "$lib" "$port" > "$conf/tessera-vpcd-$k"
done
# Note: a 2-slot entry gives 2 readers; with an odd N the last entry still
# exposes two readers, the second of which nobody serves (it shows empty).

# pcscd puts its socket and its own PID file in /run/pcscd.
mkdir -p /run/pcscd 2>/dev/null || sudo mkdir -p /run/pcscd
sock="${PCSCLITE_CSOCK_NAME:-/run/pcscd/pcscd.comm}"

log="$dir/pcscd.log"
: > "$log"
# setsid: the daemon must survive the caller's terminal and process group
# (test harnesses kill their own groups); we stop it by PID.
setsid "$pcscd_bin" --foreground --info --config "$conf" >"$log" 2>&1 < /dev/null &
pid=$!
echo "$pid" > "$pidfile"

deadline=$(( $(date +%s%N) / 1000000 + timeout * 1000 ))
while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "pcscd-up: pcscd exited during start-up; log:" >&2
        tail -n 30 "$log" >&2
        rm -f "$pidfile"
        exit 1
    fi
    ready=1
    [ -S "$sock" ] || ready=0
    if [ "$ready" = 1 ]; then
        for p in "${ports[@]}"; do
            listening "$p" || { ready=0; break; }
        done
    fi
    [ "$ready" = 1 ] && break
    if [ $(( $(date +%s%N) / 1000000 )) -ge "$deadline" ]; then
        echo "pcscd-up: not ready after ${timeout}s (socket $sock, ports ${ports[*]}); log:" >&2
        tail -n 30 "$log" >&2
        kill "$pid" 2>/dev/null || true
        rm -f "$pidfile"
        exit 1
    fi
    sleep 0.05
done

echo "pcscd-up: pcscd pid $pid ready, $readers virtual reader(s) on ports ${ports[*]}, log $log" >&2
echo "$pid"
