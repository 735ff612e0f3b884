# flowgauge daemon image: multi-stage, non-root, exec-form entrypoint so Python is PID 1 and gets SIGTERM.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 flowgauge
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config /etc/flowgauge
USER flowgauge
# Inside a container the servers must listen beyond loopback.
ENV FLOWGAUGE_CONFIG=/etc/flowgauge/default.yaml \
    FLOWGAUGE_HTTP__HOST=0.0.0.0 \
    FLOWGAUGE_BUS__EMBEDDED__HOST=0.0.0.0 \
    FLOWGAUGE_SHUTDOWN_TIMEOUT_S=5
EXPOSE 8765 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "flowgauge"]
CMD ["run"]
