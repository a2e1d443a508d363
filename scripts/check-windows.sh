#!/usr/bin/env bash
# Checks that the till's library crates build for Windows POS machines:
# `cargo check --target x86_64-pc-windows-gnu` of the library crates a till
# links (terminal, transport, protocol, crypto, card, simulator, pcsc, which
# links winscard there). Not part of scripts/test.sh: run it after touching
# platform code (file permissions, signals, sockets).
#
# Installs what is missing: the Rust target (rustup target add) and the
# MinGW-w64 C cross compiler (Debian package gcc-mingw-w64-x86-64), which
# rusqlite's bundled SQLite needs. Uses sudo only when not running as root.
#
# Usage: scripts/check-windows.sh [extra crates...]
#   e.g. scripts/check-windows.sh tessera-ledger tessera-office
set -euo pipefail

target=x86_64-pc-windows-gnu
crates=(tessera-terminal tessera-transport tessera-protocol tessera-crypto tessera-card tessera-simulator tessera-pcsc "$@")

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

if ! rustup target list --installed | grep -qx "$target"; then
    echo "check-windows: installing the Rust target $target" >&2
    rustup target add "$target"
fi

if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
    echo "check-windows: installing the MinGW-w64 cross compiler (gcc-mingw-w64-x86-64)" >&2
    sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq gcc-mingw-w64-x86-64
fi

args=()
for c in "${crates[@]}"; do
    args+=(-p "$c")
done
echo "check-windows: cargo check --target $target ${args[*]}" >&2
cargo check --target "$target" "${args[@]}"
echo "check-windows: OK, ${crates[*]} check clean for $target" >&2
