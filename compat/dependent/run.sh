#!/usr/bin/env bash
# msgtrans as a dependency (issue 16): builds and runs this out-of-tree
# application twice, with msgtrans's default features and with none, and
# checks that the TCP-only dependency tree holds no TLS, QUIC, WebSocket or
# compression crate. It has its own workspace and lockfile and no [patch],
# as a user's project would; it shares the main target dir so crates both
# builds agree on are compiled once.
#
# Usage: compat/dependent/run.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
manifest="$here/Cargo.toml"

if grep -q '^\[patch' "$manifest"; then
    echo "compat/dependent/Cargo.toml must not patch anything: it stands for a user's project" >&2
    exit 1
fi

echo "== msgtrans-dependent, TCP only: no optional crate in its tree" >&2
tree="$(cargo tree --locked --manifest-path "$manifest" --no-default-features -e normal,build --prefix none)"
forbidden="quinn-proto quinn-udp rustls ring tungstenite futures-rustls rcgen zstd flate2 httparse"
found=""
for c in $forbidden; do
    if grep -q "^$c v" <<<"$tree"; then found="$found $c"; fi
done
if [[ -n "$found" ]]; then
    echo "with default-features = false the tree still holds:$found" >&2
    exit 1
fi
# The engine runs on msgtrans's glommio fork, never on crates.io's glommio
# (which lacks the fork's API and would not even compile the engine).
if ! grep -q '^msgtrans-glommio v' <<<"$tree" || grep -q '^glommio v' <<<"$tree"; then
    echo "the dependent does not get msgtrans-glommio (and only it) as its glommio" >&2
    exit 1
fi

echo "== msgtrans-dependent, TCP only (default-features = false)" >&2
cargo run --locked --manifest-path "$manifest" --target-dir "$target" --no-default-features -- --requests 100

echo "== msgtrans-dependent, msgtrans's default features" >&2
cargo run --locked --manifest-path "$manifest" --target-dir "$target" -- --requests 100

# What a dependent meets on a machine that cannot run the engine: a locked
# memory limit below what glommio needs is an error that says what to
# raise, at start, not a panic. Needs root to drop to an unprivileged user.
echo "== msgtrans-dependent, TCP only, as an unprivileged user with 64 KiB of locked memory" >&2
if [[ $(id -u) -eq 0 ]] && command -v setpriv >/dev/null && id nobody >/dev/null 2>&1; then
    cargo build --locked --manifest-path "$manifest" --target-dir "$target" --no-default-features
    set +e
    out="$(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups \
        prlimit --memlock=65536:65536 "$target/debug/msgtrans-dependent" --requests 1 2>&1)"
    rc=$?
    set -e
    if [[ $rc -ne 1 ]] || ! grep -q 'ulimit -l' <<<"$out" || grep -q 'panicked' <<<"$out"; then
        echo "expected exit 1 with an error naming 'ulimit -l', got $rc: $out" >&2
        exit 1
    fi
    echo "refused as expected: $out" >&2
else
    echo "skipped: needs root, setpriv and a 'nobody' user" >&2
fi
