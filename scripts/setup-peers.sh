#!/usr/bin/env bash
# Installs the third-party peers the tests talk to: python `websockets`
# and `prometheus-client` (later `aioquic`) into .venv, Debian's chromium
# for the dashboard test and Debian's nats-server for the cluster tests.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Debian chromium for the dashboard test (tests/dashboard_browser.rs).
# Debian's nats-server (2.9) for the cluster tests (tests/cluster.rs), which
# start their own three-server NATS cluster from it.
missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/nats-server ]] || missing+=(nats-server)
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup-peers: missing ${missing[*]}; install Debian's packages of that name" >&2
    fi
fi
req=tests/peers/requirements.txt
stamp=.venv/.installed
if [[ -x .venv/bin/python && -f $stamp ]] && cmp -s "$req" "$stamp"; then
    exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
