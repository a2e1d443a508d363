#!/usr/bin/env bash
# The whole test suite: unit, property, end-to-end and PC/SC tests.
# Installs and starts what the PC/SC tests need (pcscd with the vpcd virtual
# reader driver), and stops it again on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets "$@"
