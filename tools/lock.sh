#!/usr/bin/env bash
# Re-resolve the image's pinned, hash-checked requirements (run after changing pyproject.toml's dependencies or to
# take updates; commit the results). tests/unit/test_image.py checks, without resolving anything, that every
# pyproject requirement is satisfied by a pin and every pin carries hashes.
#   bash tools/lock.sh [VENV_DIR]     (default .venv; pip-tools is installed into it when missing)
# The locks are for the image's platform: Linux, CPython 3.11 (pip-compile evaluates markers for the Python running it).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
[ -x "$venv/bin/pip-compile" ] || "$venv/bin/pip" install -q pip-tools
common=(--quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links --allow-unsafe)
"$venv/bin/pip-compile" "${common[@]}" --output-file requirements.lock pyproject.toml
"$venv/bin/pip-compile" "${common[@]}" --output-file requirements-build.lock requirements-build.in
