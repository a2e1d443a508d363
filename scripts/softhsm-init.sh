#!/usr/bin/env bash
# Makes a private SoftHSM2 token for trying Tessera's PKCS#11 key module:
# a SoftHSM2 configuration and token directory inside DIR (nothing outside
# it is touched), and an initialized token with the given label and PINs.
# Prints the PKCS#11 module path on standard output; the configuration to
# export as SOFTHSM2_CONF is DIR/softhsm2.conf.
#
# The Rust tests do the same steps themselves
# (tessera_pkcs11::softhsm::SoftHsmToken::create).
#
# Usage: scripts/softhsm-init.sh DIR [LABEL] [SO_PIN] [USER_PIN]
#   defaults: LABEL=tessera-till SO_PIN=87654321 USER_PIN=123456 (test PINs:
#   for a real token, pick your own and keep them out of shell history)
# Needs softhsm2 (scripts/install-deps.sh installs it).
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: $0 DIR [LABEL] [SO_PIN] [USER_PIN]" >&2
    exit 2
fi
dir=$1
label=${2:-tessera-till}
so_pin=${3:-87654321}
user_pin=${4:-123456}

if ! command -v softhsm2-util >/dev/null 2>&1; then
    echo "softhsm-init: softhsm2-util not found: run scripts/install-deps.sh (Debian package softhsm2)" >&2
    exit 1
fi

# The module: $SOFTHSM2_MODULE, the usual places, then what the package lists.
module=""
for m in "${SOFTHSM2_MODULE:-}" \
    /usr/lib/softhsm/libsofthsm2.so \
    /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
    /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so \
    /usr/lib64/softhsm/libsofthsm2.so \
    /usr/lib64/pkcs11/libsofthsm2.so \
    /usr/local/lib/softhsm/libsofthsm2.so; do
    if [ -n "$m" ] && [ -f "$m" ]; then
        module=$m
        break
    fi
done
if [ -z "$module" ] && command -v dpkg >/dev/null 2>&1; then
    module=$(dpkg -L libsofthsm2 2>/dev/null | grep '/libsofthsm2\.so$' | head -n1 || true)
fi
if [ -z "$module" ] || [ ! -f "$module" ]; then
    echo "softhsm-init: libsofthsm2.so not found: run scripts/install-deps.sh (Debian package softhsm2)" >&2
    exit 1
fi

mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf="$dir/softhsm2.conf"
cat >"$conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF

SOFTHSM2_CONF=$conf softhsm2-util --init-token --free --label "$label" \
    --so-pin "$so_pin" --pin "$user_pin" >&2

echo "softhsm-init: token \"$label\" in $dir/tokens; export SOFTHSM2_CONF=$conf" >&2
echo "$module"
