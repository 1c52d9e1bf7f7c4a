#!/usr/bin/env bash
# msgtrans as a dependency (issue 16), the parts a dependent crate cannot
# show: every published crate packages (and its package builds on its own),
# and msgtrans builds with each feature alone. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo package --workspace" >&2
# Builds each crate from its packaged files, with the workspace's other
# crates from a local registry, as crates.io would see them. --allow-dirty:
# CI's checkout is clean; a developer's need not be.
cargo package --workspace --locked --allow-dirty 2>&1 | grep -v '^warning: ignoring \(test\|benchmark\) ' >&2

echo "== msgtrans with each feature alone" >&2
for features in "" websocket tls quic compression metrics; do
    echo "-- --no-default-features --features '$features'" >&2
    cargo check --locked -p msgtrans --no-default-features --features "$features"
done
