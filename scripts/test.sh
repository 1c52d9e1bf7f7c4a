#!/usr/bin/env bash
# The whole test suite, from a fresh checkout. Installs what the tests need
# (third-party peers go into .venv), then runs every test once.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# A one-shot build gains nothing from incremental state, which is large.
export CARGO_INCREMENTAL=0
# Third-party protocol peers (python websockets) into .venv.
./scripts/setup-peers.sh
# vendor/glommio (msgtrans-glommio, the glommio fork) is a member so that it
# packages with the rest; its own upstream suite is not ours to run here
# (tests/glommio_loop.rs covers what the fork changed).
# `cluster` is off by default (it brings a NATS client); its tests run here
# against a real NATS cluster.
# Tests that run the examples as processes (bench_tools, recovery_sigkill,
# cluster) need their binaries: `cargo test --all-targets` builds examples
# only as test harnesses, never as the programs themselves.
cargo build --workspace --exclude msgtrans-glommio --examples --locked --features msgtrans/cluster
cargo test --workspace --exclude msgtrans-glommio --all-targets --locked --features msgtrans/cluster "$@"
cargo test --workspace --exclude msgtrans-glommio --doc --locked --features msgtrans/cluster
# loom model tests of the lock-free parts (msgtrans-sync). --cfg loom
# reaches only that crate's few dependencies, and its own target dir
# keeps the main build from being invalidated.
# The release profile's LTO buys loom nothing and costs build time: off.
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo test -p msgtrans-sync --release --locked --target-dir target/loom
# MsgTrans 1.0.10's own client against our server: its own workspace, so
# the main build never compiles the 1.0 dependency tree.
./compat/msgtrans1/run.sh
./compat/msgtrans2/run.sh
# msgtrans as a dependency: an application outside this workspace, with no
# [patch], built and run with default features and with none; then every
# crate packages and each feature builds alone.
./compat/dependent/run.sh
./scripts/package-check.sh
