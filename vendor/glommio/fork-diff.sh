#!/usr/bin/env bash
# Prints this fork's difference from the upstream glommio release it is
# based on: fetches that release from crates.io into a scratch crate, then
# diffs the sources (the manifest and the READMEs differ by design and are
# left out). Usage: ./fork-diff.sh [> msgtrans.patch]
set -euo pipefail
UPSTREAM=0.9.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/src"
: > "$scratch/src/lib.rs"
cat > "$scratch/Cargo.toml" <<TOML
[package]
name = "fork-diff-scratch"
version = "0.0.0"
edition = "2021"
[dependencies]
glommio = "=$UPSTREAM"
[workspace]
TOML
cargo fetch --quiet --manifest-path "$scratch/Cargo.toml"
upstream="$(cargo metadata --format-version 1 --manifest-path "$scratch/Cargo.toml" |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "glommio").rsplit("/", 1)[0])')"
cd "$here"
# diff exits 1 when the trees differ, which is the point.
diff -ruN --exclude=Cargo.toml --exclude=Cargo.toml.orig --exclude='README*' \
    --exclude=.cargo_vcs_info.json --exclude=fork-diff.sh --exclude=rustfmt.toml --exclude=target \
    "$upstream" . | sed "s|$upstream|a|; s|^+++ \./|+++ b/|" || true
