#!/usr/bin/env bash
# msgtrans as a dependency (issue 16), the parts a dependent crate cannot
# show: every published crate packages (and its package builds on its own),
# and msgtrans builds with each feature alone. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo package --workspace" >&2
# Cargo unpacks the packages it verifies from a local registry into
# $CARGO_HOME/registry/src/-<hash>/ and reuses what it finds there for
# the same version, so a second run would build the first run's sources.
# Those directories (local registries only, never crates.io's) go first.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/msgtrans-*
# Cargo also takes registry crates as unchanging, so what it built from
# them last time is reused: forget those builds (only the ones whose
# sources came from a local registry).
target="${CARGO_TARGET_DIR:-target}"
for d in "$target"/debug/deps/msgtrans*.d; do
    [[ -e "$d" ]] || continue
    if grep -q '/registry/src/-' "$d"; then
        hash="$(basename "$d" .d)"
        rm -rf "$target"/debug/.fingerprint/*-"${hash##*-}"
    fi
done
# Builds each crate from its packaged files, with the workspace's other
# crates from a local registry, as crates.io would see them. --allow-dirty:
# CI's checkout is clean; a developer's need not be.
cargo package --workspace --locked --allow-dirty 2>&1 | grep -v '^warning: ignoring \(test\|benchmark\) ' >&2

echo "== msgtrans with each feature alone" >&2
for features in "" websocket tls quic compression metrics cluster; do
    echo "-- --no-default-features --features '$features'" >&2
    cargo check --locked -p msgtrans --no-default-features --features "$features"
done
