"""The daemon's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/status` (aiohttp, same event loop).

Sits at the top of `flowgauge.telemetry`; the composition root starts it first and closes it last, so the final
counters can still be scraped during shutdown. `/metrics` renders the injected registry on the loop thread,
because the scrape-time signal collector reads engine state that is only safe to touch from that thread; the
rendering (and its gzip form) is cached for `metrics_cache_s`, so any number of scrapers costs the loop at most
one rendering per interval. Must not use the global `prometheus_client.REGISTRY`, and must not log per request
(scrapes are periodic); refused requests are logged at most once per 10 s, with the count held back.

With a `token`, `/metrics` and `/status` require exactly one `Authorization: Bearer <token>` header, else 401
(counted: `count_http_rejected("auth")`); `/healthz` and `/readyz` stay open for probes. A connection whose
request headers are not complete `header_timeout` seconds after their first byte (or after the accept, for the
first request) is aborted (counted: `count_http_rejected("deadline")`): aiohttp itself waits indefinitely.

    /metrics   Prometheus text format (OpenMetrics when the scraper asks for it), from `registry`
    /healthz   200 "ok" while the process serves HTTP (liveness)
    /readyz    200 {"ready": true} when `ready()` is true, else 503 {"ready": false, "reason": ...} plus what
               `not_ready()` says (which books are not VALID and why)
    /status    200 JSON from `status()`

Every JSON document (`/status`, `/readyz`) goes out with the secrets registered in `flowgauge.logs` replaced by
`***` (`register_secrets`), wherever a string carries one.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from flowgauge.logs import BurstLimiter, redact

__all__ = ["HttpServer"]

log = logging.getLogger(__name__)

_JSON = "application/json"
_PROTECTED = frozenset({"/metrics", "/status"})  # with a token; /healthz and /readyz stay open for probes
_LOG_INTERVAL_S = 10.0


class HttpTelemetry(Protocol):
    def count_http_rejected(self, reason: str) -> None:
        """A request refused (`auth`) or a connection aborted (`deadline`)."""
        ...


class _Guard(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol to see when request headers are incomplete, and since when.

    A header block ends with an empty line; bytes received after the last one mean a request is being sent.
    """

    def __init__(self, inner: asyncio.Protocol, guards: set[_Guard]) -> None:
        self.inner = inner
        self._guards = guards
        self.transport: asyncio.Transport | None = None
        self.pending_since: float | None = time.monotonic()  # a fresh connection owes its first request
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._guards.add(self)
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guards.discard(self)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        window = self._tail + data
        end = window.rfind(b"\r\n\r\n")
        if end == -1:
            if self.pending_since is None:
                self.pending_since = time.monotonic()
        else:
            self.pending_since = time.monotonic() if end + 4 < len(window) else None
        self._tail = window[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _GuardedSite(web.TCPSite):
    """A TCP site whose connections are wrapped in `_Guard`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guards: set[_Guard]) -> None:
        super().__init__(runner, host, port)
        self._guards = guards

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        guards = self._guards
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Guard(server(), guards), self._host, self._port)


def _json_response(body: object, status: int = 200) -> web.Response:
    # default=str: status documents may carry enums, paths or datetimes; render them rather than fail.
    # redact: no registered secret (token, broker password) leaves in a document, e.g. in an error message that
    # echoes a broker URL.
    return web.Response(
        body=orjson.dumps(redact(body), default=str, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type=_JSON,
    )


class HttpServer:
    """aiohttp server for the observability endpoints.

    Args:
        host: interface to bind.
        port: TCP port; 0 picks a free one (see `bound_port`).
        registry: the registry `/metrics` serves.
        ready: readiness predicate for `/readyz`; None means always ready.
        status: producer of the `/status` document; None serves `{}`.
        not_ready: producer of the reasons merged into a 503 `/readyz` body (its `reason` replaces the
            default one-liner); None: the body says only "not ready".
        shutdown_timeout: seconds in-flight requests get when the server closes.
        token: bearer token required by /metrics and /status; None leaves them open.
        telemetry: where refusals are counted (`Telemetry`); None counts nothing.
        metrics_cache_s: how long one /metrics rendering is served; 0 renders every scrape.
        header_timeout: seconds allowed for a request's headers to arrive.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], bool] | None = None,
        status: Callable[[], Mapping[str, Any]] | None = None,
        *,
        shutdown_timeout: float = 5.0,
        not_ready: Callable[[], Mapping[str, Any]] | None = None,
        token: str | None = None,
        telemetry: HttpTelemetry | None = None,
        metrics_cache_s: float = 1.0,
        header_timeout: float = 5.0,
    ) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._ready = ready
        self._status = status
        self._not_ready = not_ready
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._closed = False
        self._token = token or None
        self._telemetry = telemetry
        self._metrics_cache_s = metrics_cache_s
        self._metrics_cache: dict[tuple[str, bool], tuple[float, bytes]] = {}
        self.metrics_renders = 0
        """How many times /metrics rendered the registry (the rest were served from the cache)."""
        self._header_timeout = header_timeout
        self._guards: set[_Guard] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._logs = BurstLimiter(_LOG_INTERVAL_S)

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth] if self._token is not None else [])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status_handler)
        return app

    async def start(self) -> None:
        """Bind and start serving. Idempotent.

        Raises:
            RuntimeError: if the server was closed.
            OSError: if the address cannot be bound.
        """
        if self._closed:
            raise RuntimeError("the HTTP server is closed")
        if self._runner is not None:
            return
        # access_log=None: nothing is logged per request.
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        started = False
        try:
            await _GuardedSite(runner, self._host, self._port, self._guards).start()
            started = True
        finally:
            if not started:
                await runner.cleanup()
        self._runner = runner
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="http-sweep")

    @property
    def bound_port(self) -> int:
        """The TCP port actually bound (useful with port 0).

        Raises:
            RuntimeError: if the server is not running.
        """
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the HTTP server is not running")
        port: int = self._runner.addresses[0][1]
        return port

    async def close(self) -> None:
        """Stop listening, let in-flight requests finish within `shutdown_timeout`, release. Idempotent."""
        self._closed = True
        runner, self._runner = self._runner, None
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.wait([sweeper])
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------ handlers

    async def _sweep(self) -> None:
        """Abort connections whose request headers are overdue (header bytes trickled, or none sent)."""
        period = max(0.05, self._header_timeout / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for guard in list(self._guards):
                since = guard.pending_since
                if since is not None and now - since > self._header_timeout and guard.transport is not None:
                    self._guards.discard(guard)
                    self._reject("deadline", guard.transport.get_extra_info("peername"))
                    guard.transport.abort()

    def _reject(self, reason: str, peer: object) -> None:
        if self._telemetry is not None:
            self._telemetry.count_http_rejected(reason)
        held_back = self._logs.allow(reason)
        if held_back is not None:
            log.warning("http_rejected: reason=%s client=%s (%d more not logged)", reason, peer, held_back)

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path not in _PROTECTED:
            return await handler(request)
        assert self._token is not None
        values = request.headers.getall("Authorization", [])
        scheme, _, supplied = values[0].partition(" ") if len(values) == 1 else ("", "", "")
        # compare_digest: the response time must not tell how much of a guess was right. surrogateescape: aiohttp
        # keeps a header's bytes that are not UTF-8 as lone surrogates; they compare as the bytes sent (a
        # mismatch), where a strict encode raised (HTTP 500 and a traceback per request).
        offered = supplied.strip().encode(errors="surrogateescape")
        if scheme.lower() == "bearer" and hmac.compare_digest(offered, self._token.encode()):
            return await handler(request)
        self._reject("auth", request.remote)
        return web.Response(status=401, text="unauthorized\n",
                            headers={"WWW-Authenticate": 'Bearer realm="flowgauge"'})

    async def _metrics(self, request: web.Request) -> web.Response:
        accept = ",".join(request.headers.getall("Accept", []))
        encoder, content_type = choose_encoder(accept)
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        now = time.monotonic()
        cached = self._metrics_cache.get((content_type, gzipped))
        if cached is not None and now - cached[0] < self._metrics_cache_s:
            body = cached[1]
        else:
            plain = self._metrics_cache.get((content_type, False))
            if plain is not None and now - plain[0] < self._metrics_cache_s:
                body, rendered_at = plain[1], plain[0]
            else:
                body, rendered_at = encoder(self._registry), now
                self.metrics_renders += 1
                self._metrics_cache[(content_type, False)] = (now, body)
            if gzipped:
                # Compressed once per rendering too: per-scrape compression was most of a scrape's CPU.
                body = gzip.compress(body, compresslevel=6)
                self._metrics_cache[(content_type, True)] = (rendered_at, body)
        # The header is set verbatim: aiohttp's content_type= argument rejects the charset/version parameters.
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready is None:
            return _json_response({"ready": True})
        try:
            ready = bool(self._ready())
        except Exception as exc:
            log.warning("readiness_check_failed: %r", exc)
            return _json_response({"ready": False, "reason": f"readiness check failed: {type(exc).__name__}"},
                                  status=503)
        if ready:
            return _json_response({"ready": True})
        body: dict[str, Any] = {"ready": False, "reason": "not ready"}
        if self._not_ready is not None:
            try:
                body.update(self._not_ready())
            except Exception as exc:
                log.warning("readiness_reasons_failed: %r", exc)
            body["ready"] = False
        return _json_response(body, status=503)

    async def _status_handler(self, request: web.Request) -> web.Response:
        if self._status is None:
            return _json_response({})
        try:
            document = dict(self._status())
        except Exception as exc:
            log.warning("status_failed: %r", exc)
            return _json_response({"error": f"status unavailable: {type(exc).__name__}"}, status=500)
        return _json_response(document)
