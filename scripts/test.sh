#!/usr/bin/env bash
# The whole test suite, from a fresh checkout. Installs what the tests need
# (third-party peers go into .venv), then runs every test once.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# Third-party protocol peers (python websockets) into .venv.
./scripts/setup-peers.sh
cargo test --workspace --all-targets --locked "$@"
cargo test --workspace --doc --locked
# loom model tests of the lock-free parts (msgtrans-sync). --cfg loom
# reaches only that crate's few dependencies, and its own target dir
# keeps the main build from being invalidated.
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
    cargo test -p msgtrans-sync --release --locked --target-dir target/loom
# MsgTrans 1.0.10's own client against our server: its own workspace, so
# the main build never compiles the 1.0 dependency tree.
./compat/msgtrans1/run.sh
./compat/msgtrans2/run.sh
