# flowgauge daemon image: multi-stage, non-root, exec-form entrypoint so Python is PID 1 and gets SIGTERM.
# It runs with a read-only root filesystem (docker run --read-only --tmpfs /tmp; compose sets read_only): the daemon
# writes nothing but /tmp and record.dir when set (mount a volume there); no bytecode is written at run time.
FROM python:3.11-slim AS build
# gcc builds the compiled hot core (flowgauge.core._core, Cython fetched as a build requirement); without it the
# wheel would carry only the pure-Python core.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY service ./service
# setup.py copies config/*.yaml into the wheel (flowgauge/config_files): `-c offline-demo` works in the image.
COPY config ./config
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 flowgauge
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && python -c "from flowgauge import core; core.select('compiled')"
# Editable copies for operators (mount over /etc/flowgauge to change them); the same files are in the wheel.
COPY config /etc/flowgauge
USER flowgauge
# Inside a container the servers must listen beyond loopback, so the image fails closed: without
# FLOWGAUGE_BUS__EMBEDDED__TOKEN and FLOWGAUGE_HTTP__TOKEN (or *_ALLOW_UNAUTHENTICATED=true) `run` exits 2 with one
# line naming both fixes. /healthz and /readyz need no token, so the health check below works either way.
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
