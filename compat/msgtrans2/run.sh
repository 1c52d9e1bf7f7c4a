#!/usr/bin/env bash
# MsgTrans 2.0 compatibility check: builds our `sharded_server` example, then
# runs tests/v2_client_against_sharded_server.rs, whose TCP and WebSocket
# clients are the published msgtrans 2.0.0-beta.3 crate. Exits non-zero on
# any failure.
#
# This package is its own workspace (excluded from /work/main's) with its own
# Cargo.lock, so the main `cargo test --workspace` never builds the 2.0
# dependency tree. It shares the main target dir so common crates are built
# once. Its tests include compat/msgtrans1/tests/common/mod.rs (server
# helpers) by path.
#
# Usage: compat/msgtrans2/run.sh [extra cargo test args, e.g. -- --nocapture]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"

echo "== build examples/sharded_server" >&2
cargo build --example sharded_server --target-dir "$target"
server="$target/debug/examples/sharded_server"
[[ -x "$server" ]] || { echo "missing $server" >&2; exit 1; }

echo "== msgtrans 2.0.0-beta.3 client against sharded_server" >&2
MSGTRANS_SHARDED_SERVER="$server" \
    cargo test --locked --manifest-path compat/msgtrans2/Cargo.toml --target-dir "$target" "$@"
