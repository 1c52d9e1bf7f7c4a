#!/usr/bin/env bash
# MsgTrans 1.0 compatibility check: builds our `sharded_server` example, then
# runs tests/v1_client_against_sharded_server.rs, whose client is the
# published msgtrans 1.0.10 crate. Exits non-zero on any failure.
#
# This package is its own workspace (excluded from /work/main's), so the main
# `cargo test --workspace` never builds msgtrans 1.0.10's dependency tree. It
# shares the main target dir so common crates are built once.
#
# Usage: compat/msgtrans1/run.sh [extra cargo test args, e.g. -- --nocapture]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"

echo "== build examples/sharded_server" >&2
cargo build --example sharded_server --target-dir "$target"
server="$target/debug/examples/sharded_server"
[[ -x "$server" ]] || { echo "missing $server" >&2; exit 1; }

echo "== msgtrans 1.0.10 client against sharded_server" >&2
MSGTRANS_SHARDED_SERVER="$server" \
    cargo test --locked --manifest-path compat/msgtrans1/Cargo.toml --target-dir "$target" "$@"
