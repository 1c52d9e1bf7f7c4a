#!/usr/bin/env bash
# Installs the third-party protocol peers the tests talk to (python
# `websockets`, later `aioquic`) into .venv, once. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/peers/requirements.txt
stamp=.venv/.installed
if [[ -x .venv/bin/python && -f $stamp ]] && cmp -s "$req" "$stamp"; then
    exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
