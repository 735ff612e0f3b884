#!/usr/bin/env bash
# Install everything the test suite needs, type-check, and run it: the README's test command, and what .ci/run calls.
#   bash tools/test.sh [VENV_DIR]       (default .venv)
# System packages: Debian's prometheus (the scrape test runs a real Prometheus server), installed with
# apt-get when it is missing (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
if ! command -v prometheus >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e ".[dev,bench]"
"$venv/bin/python" -m mypy  # type-check service/flowgauge ([tool.mypy] in pyproject.toml) before the tests
exec "$venv/bin/python" -m pytest -q
