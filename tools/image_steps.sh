#!/usr/bin/env bash
# The Dockerfile's install steps without Docker (no engine on the build machines): on a Debian bookworm host with
# CPython 3.11 (the base image's release), in fresh venvs under a scratch directory, from a clean export of HEAD:
#   builder: requirements-build.lock with --require-hashes, then the wheel with --no-build-isolation (compiled core);
#   runtime: requirements.lock as binary wheels only (the runtime stage has no compiler) with --require-hashes,
#            the wheel with --no-deps, pip check, the compiled core selected, the image's config checked.
# Not part of the test suite (it downloads ~35 wheels): run it after changing the locks or the Dockerfile.
#   bash tools/image_steps.sh [SCRATCH_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="${1:-$(mktemp -d)}"
mkdir -p "$scratch/src" "$scratch/wheels" "$scratch/deps"
git archive HEAD | tar -x -C "$scratch/src"
python3 -m venv "$scratch/build" && python3 -m venv "$scratch/runtime"
"$scratch/build/bin/pip" install -q --no-cache-dir --require-hashes -r requirements-build.lock
(cd "$scratch/src" && "$scratch/build/bin/pip" wheel -q --no-cache-dir --no-deps --no-build-isolation \
  --wheel-dir "$scratch/wheels" .)
python3 -m zipfile -l "$scratch"/wheels/flowgauge-*.whl | grep '_core.*\.so' >/dev/null  # not -q: pipefail
"$scratch/runtime/bin/pip" download -q --only-binary=:all: --require-hashes -r requirements.lock -d "$scratch/deps"
"$scratch/runtime/bin/pip" install -q --no-cache-dir --no-index --find-links "$scratch/deps" --require-hashes \
  -r requirements.lock
"$scratch/runtime/bin/pip" install -q --no-cache-dir --no-deps --no-index "$scratch"/wheels/flowgauge-*.whl
"$scratch/runtime/bin/pip" check
cd "$scratch"
"$scratch/runtime/bin/python" -c "from flowgauge import core; core.select('compiled')"
FLOWGAUGE_HTTP__TOKEN=t FLOWGAUGE_BUS__EMBEDDED__TOKEN=t FLOWGAUGE_HTTP__HOST=0.0.0.0 \
  FLOWGAUGE_BUS__EMBEDDED__HOST=0.0.0.0 "$scratch/runtime/bin/flowgauge" check-config -c default
echo "image steps OK ($scratch)"
