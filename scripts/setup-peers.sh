#!/usr/bin/env bash
# Installs the third-party peers the tests talk to: python `websockets`
# and `prometheus-client` (later `aioquic`) into .venv, and Debian's
# chromium for the dashboard test. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Debian chromium for the dashboard test (tests/dashboard_browser.rs).
if [[ ! -x /usr/bin/chromium ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq chromium >/dev/null
    else
        echo "setup-peers: /usr/bin/chromium is missing; install Debian's chromium package" >&2
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
