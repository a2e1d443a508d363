#!/usr/bin/env bash
# The whole test suite: unit, property, end-to-end and PC/SC tests.
# Installs and starts what the PC/SC tests need (pcscd with the vpcd virtual
# reader driver), and stops it again on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# The pcsc crate links libpcsclite; the PC/SC tests start their own pcscd
# (scripts/pcscd-up.sh) with the vpcd driver, and stop it by PID.
./scripts/install-deps.sh
cargo test --workspace --all-targets "$@"
