#!/usr/bin/env bash
# The demo, on the real PC/SC stack: installs pcscd and the vpcd virtual
# reader driver when missing, starts a private pcscd with two virtual readers
# (the two tills), runs `tessera demo` with virtual cards behind it, and stops
# pcscd again. If pcscd cannot be started the demo runs in process and says
# so. Arguments go to `tessera demo` (e.g. --seed 1, --json).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
cargo build --release --quiet --bin tessera
dir="${TMPDIR:-/tmp}/tessera-demo-pcscd"
if TESSERA_PCSCD_DIR="$dir" ./scripts/pcscd-up.sh --readers 2 >"$dir.log" 2>&1; then
    trap 'TESSERA_PCSCD_DIR="$dir" ./scripts/pcscd-down.sh >/dev/null 2>&1 || true' EXIT
else
    echo "(pcscd could not be started, see $dir.log: the demo runs in process)" >&2
fi
target/release/tessera demo "$@"
