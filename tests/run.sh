#!/usr/bin/env bash
# The project's test command (README): sets up everything on a fresh machine, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q mosquitto; else sudo apt-get install -y -q mosquitto; fi
fi
[ -x .venv/bin/python ] || python3.11 -m venv .venv
.venv/bin/pip install -q torch==2.13.0 -e '.[dev,ray]'
exec .venv/bin/python -m pytest "$@"
