# flowgauge daemon image: multi-stage, non-root, exec-form entrypoint so Python is PID 1 and gets SIGTERM.
# It runs with a read-only root filesystem (docker run --read-only --tmpfs /tmp; compose sets read_only): the daemon
# writes nothing but /tmp and record.dir when set (mount a volume there); no bytecode is written at run time.
#
# Reproducible inputs: the base image is pinned by version and digest, and every Python package the image installs
# is pinned with its hashes (requirements.lock for the daemon, requirements-build.lock for the build; tools/lock.sh
# writes both, tests/unit/test_image.py checks they satisfy pyproject.toml).
# The digest below was NOT verified from this repository's build machines (no registry reachable there); it is the
# multi-arch index digest recorded for this tag. Refresh it (and the tag) with either of:
#   docker buildx imagetools inspect python:3.11.11-slim-bookworm --format '{{json .Manifest.Digest}}'
#   skopeo inspect --format '{{.Digest}}' docker://docker.io/library/python:3.11.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

# ---- builder: compiles the hot core (flowgauge.core._core, Cython) into the flowgauge wheel -----------------------
FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# gcc builds the compiled core; without it the wheel would carry only the pure-Python core. Debian package versions
# are not pinned: bookworm's point releases replace them, and the base image digest already fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The build requirements, hash-checked, then the wheel built without build isolation (nothing unpinned fetched).
COPY requirements-build.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements-build.lock
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY service ./service
# setup.py copies config/*.yaml into the wheel (flowgauge/config_files): `-c offline-demo` works in the image.
COPY config ./config
# The wheel must carry the compiled core (grep without -q: with pipefail, -q's early exit would fail the pipe).
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && python -m zipfile -l /wheels/flowgauge-*.whl | grep '_core.*\.so' >/dev/null

# ---- runtime: the locked dependencies and the wheel, no compiler ------------------------------------------------
FROM ${PYTHON_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A numeric user (uid and gid 10001), so Kubernetes runAsNonRoot can verify it without resolving a name.
RUN groupadd --gid 10001 flowgauge && useradd --create-home --uid 10001 --gid 10001 flowgauge
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /wheels
# Dependencies exactly as locked (hashes required), then flowgauge itself with no dependency resolution at all.
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && pip install --no-cache-dir --no-deps --no-index /wheels/flowgauge-*.whl \
    && pip check \
    && rm -rf /wheels /tmp/requirements.lock \
    && python -c "from flowgauge import core; core.select('compiled')"
# Editable copies for operators (mount over /etc/flowgauge to change them); the same files are in the wheel.
COPY config /etc/flowgauge
USER 10001:10001
# Inside a container the servers must listen beyond loopback, so the image fails closed: without
# FLOWGAUGE_BUS__EMBEDDED__TOKEN and FLOWGAUGE_HTTP__TOKEN (or *_ALLOW_UNAUTHENTICATED=true) `run` exits 2 with
# one line naming both fixes. /healthz and /readyz need no token, so the health check below works either way.
ENV FLOWGAUGE_CONFIG=/etc/flowgauge/default.yaml \
    PYTHONDONTWRITEBYTECODE=1 \
    FLOWGAUGE_HTTP__HOST=0.0.0.0 \
    FLOWGAUGE_BUS__EMBEDDED__HOST=0.0.0.0 \
    FLOWGAUGE_SHUTDOWN_TIMEOUT_S=5
EXPOSE 8765 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "flowgauge"]
CMD ["run"]
