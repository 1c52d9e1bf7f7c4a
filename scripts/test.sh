#!/usr/bin/env bash
# The whole test suite, from a fresh checkout. Installs what the tests need
# (third-party peers go into .venv), then runs every test once.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo test --workspace --all-targets --locked "$@"
cargo test --workspace --doc --locked
