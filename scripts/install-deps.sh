#!/usr/bin/env bash
# Installs the Debian packages Tessera's PC/SC tests and tools need:
# the PC/SC daemon and its client library headers, the vpcd virtual reader
# driver (vsmartcard-vpcd) and the independent tools used for cross-checks
# (opensc-tool, pcsc_scan/scriptor), SoftHSM2 (softhsm2: the PKCS#11 token
# the tessera-pkcs11 tests and benchmark keep their keys in), a C compiler
# and valgrind for the C ABI's example test (crates/tessera-ffi), plus
# tmux (the clerk-session test in crates/tessera-cli/tests/clerk_session.rs
# runs the till in a real pseudo-terminal), chromium (the dashboard test in
# crates/tessera-cli/tests/dashboard.rs drives it headless), plus
# pkg-config, ss (iproute2) and python3 (the C ABI's ctypes smoke test) when
# those commands are missing.
#
# Idempotent: installs nothing when every package is already there, and runs
# `apt-get update` at most once. Uses sudo only when not running as root.
#
# Usage: scripts/install-deps.sh
set -euo pipefail

packages=(pcscd libpcsclite-dev vsmartcard-vpcd opensc pcsc-tools softhsm2 gcc valgrind tmux chromium)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

# Commands the build and the scripts use, with the package that has them:
# the pcsc-sys crate finds libpcsclite through pkg-config; pcscd-up.sh checks
# listening ports with ss.
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v python3 >/dev/null 2>&1 || missing+=(python3)

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
