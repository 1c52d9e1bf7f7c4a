#!/usr/bin/env bash
# What msgtrans costs a dependent (issue 16): for this application built
# TCP-only (default-features = false) and with msgtrans's default features,
# the crates in its dependency tree, the time of a clean release build, and
# the binary's size as built and stripped. Each build starts from an empty
# target dir of its own, so it takes a few minutes per row.
#
# Usage: compat/dependent/measure.sh [-h]
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
echo "| msgtrans features | crates | clean release build | binary | stripped |"
echo "|---|--:|--:|--:|--:|"
for mode in none default; do
    flags=()
    [[ $mode == none ]] && flags=(--no-default-features)
    crates=$(cargo tree --locked --manifest-path "$here/Cargo.toml" "${flags[@]}" -e normal,build --prefix none |
        sed 's/ (\*)$//; s/ (proc-macro)$//' | sort -u | wc -l)
    start=$(date +%s.%N)
    cargo build --quiet --locked --release --manifest-path "$here/Cargo.toml" "${flags[@]}" \
        --target-dir "$scratch/$mode"
    secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f} s')" "$start" "$(date +%s.%N)")
    bin="$scratch/$mode/release/msgtrans-dependent"
    strip -o "$scratch/$mode.stripped" "$bin"
    mib() { python3 -c "import os, sys; print(f'{os.path.getsize(sys.argv[1]) / 2**20:.1f} MiB')" "$1"; }
    label=$([[ $mode == none ]] && echo "none (TCP only)" || echo "default")
    echo "| $label | $crates | $secs | $(mib "$bin") | $(mib "$scratch/$mode.stripped") |"
done
