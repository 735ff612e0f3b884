"""The daemon's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/status` (aiohttp, same event loop).

Sits at the top of `flowgauge.telemetry`; the composition root starts it first and closes it last, so the final
counters can still be scraped during shutdown. `/metrics` renders the injected registry on the loop thread,
because the scrape-time signal collector reads engine state that is only safe to touch from that thread.
Must not use the global `prometheus_client.REGISTRY`, and must not log per request (scrapes are periodic).

    /metrics   Prometheus text format (OpenMetrics when the scraper asks for it), from `registry`
    /healthz   200 "ok" while the process serves HTTP (liveness)
    /readyz    200 {"ready": true} when `ready()` is true, else 503 {"ready": false, "reason": ...} plus what
               `not_ready()` says (which books are not VALID and why)
    /status    200 JSON from `status()`
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["HttpServer"]

log = logging.getLogger(__name__)

_JSON = "application/json"


def _json_response(body: object, status: int = 200) -> web.Response:
    # default=str: status documents may carry enums, paths or datetimes; render them rather than fail.
    return web.Response(
        body=orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS),
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

    def _make_app(self) -> web.Application:
        app = web.Application()
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
            await web.TCPSite(runner, self._host, self._port).start()
            started = True
        finally:
            if not started:
                await runner.cleanup()
        self._runner = runner

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

    async def _metrics(self, request: web.Request) -> web.Response:
        accept = ",".join(request.headers.getall("Accept", []))
        encoder, content_type = choose_encoder(accept)
        body = encoder(self._registry)
        # The header is set verbatim: aiohttp's content_type= argument rejects the charset/version parameters.
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response

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
