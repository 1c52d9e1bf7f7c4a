#!/usr/bin/env bash
# Builds the baseline-4 echo servers (published msgtrans 1.0.10 and
# 2.0.0-beta.3) in release mode into the shared target dir and prints the
# two binary paths, one per line, on stdout (cargo's progress goes to stderr).
#
# Each server is its own workspace with a committed Cargo.lock (--locked);
# both are excluded from the /work/main workspace.
#
# Usage: compat/servers/build.sh      (CARGO_TARGET_DIR overrides the target dir)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"

for name in msgtrans1-server msgtrans2-server; do
    echo "== build $name (release)" >&2
    cargo build --release --locked \
        --manifest-path "compat/servers/$name/Cargo.toml" --target-dir "$target" >&2
    bin="$target/release/$name"
    [[ -x "$bin" ]] || { echo "missing $bin" >&2; exit 1; }
done
for name in msgtrans1-server msgtrans2-server; do
    echo "$target/release/$name"
done
