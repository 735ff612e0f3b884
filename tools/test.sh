#!/usr/bin/env bash
# Install everything the test suite needs, type-check, and run it: the README's test command, and what .ci/run calls.
#   bash tools/test.sh [VENV_DIR]       (default .venv)
# System packages: Debian's prometheus (the scrape test runs a real Prometheus server, and promtool checks the
# rules), prometheus-alertmanager (the alerting test delivers an alert through a real Alertmanager), nats-server
# and redis-server (the bus tests start their own on free loopback ports), installed with apt-get when missing
# (as root, or through sudo). Each package installs a command of its own name.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
missing=()
for pkg in prometheus prometheus-alertmanager nats-server redis-server; do
  # nats-server lives in /usr/sbin, which a non-root PATH may not include.
  if ! command -v "$pkg" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$pkg" ]; then missing+=("$pkg"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e ".[dev,bench]"
"$venv/bin/python" -m mypy  # type-check service/flowgauge ([tool.mypy] in pyproject.toml) before the tests
# Two workers, each taking whole test files (module-scoped servers start once per file): see pyproject's dev extra.
exec "$venv/bin/python" -m pytest -q -n 2 --dist loadfile
