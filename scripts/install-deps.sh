#!/usr/bin/env bash
# Installs the Debian packages Tessera's PC/SC tests and tools need:
# the PC/SC daemon and its client library headers, the vpcd virtual reader
# driver (vsmartcard-vpcd) and the independent tools used for cross-checks
# (opensc-tool, pcsc_scan/scriptor).
#
# Idempotent: installs nothing when every package is already there, and runs
# `apt-get update` at most once. Uses sudo only when not running as root.
#
# Usage: scripts/install-deps.sh
set -euo pipefail

packages=(pcscd libpcsclite-dev vsmartcard-vpcd opensc pcsc-tools)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

# libpcsclite-dev links against pkg-config at build time of the pcsc-sys crate.
if ! command -v pkg-config >/dev/null 2>&1; then
    missing+=(pkg-config)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps: all packages present (${packages[*]})"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "install-deps: missing ${missing[*]} and not root, and sudo is not available" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
