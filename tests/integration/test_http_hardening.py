"""HTTP server hardening (issue 10, item 8 and the probe defects): a bearer token for /metrics and /status with
/healthz and /readyz left open, exactly one Authorization header, refusals counted and logged rate-limited,
/metrics rendered at most once per cache interval whatever the number of scrapers, and a deadline for
request headers. Real aiohttp client and raw sockets against a real `HttpServer`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from tests.procs import wait_for

from flowgauge.telemetry.http import HttpServer
from flowgauge.telemetry.instruments import Telemetry

pytestmark = pytest.mark.integration

TIMEOUT = aiohttp.ClientTimeout(total=5)


class CountingCollector(Collector):
    """A real collector that counts how often the registry was rendered and exposes a settable value."""

    def __init__(self) -> None:
        self.collects = 0
        self.value = 1.0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.collects += 1
        yield GaugeMetricFamily("flowgauge_test_value", "A value the test sets.", value=self.value)


def _rejected(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("flowgauge_http_rejected_total", {"reason": reason}) or 0.0


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    """What arrives before the server closes the connection; an abort's reset counts as the close."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


async def test_token_protects_metrics_and_status_but_not_the_probes(
    registry: CollectorRegistry, session: aiohttp.ClientSession
) -> None:
    telemetry = Telemetry(registry)
    async with HttpServer(
        "127.0.0.1", 0, registry, lambda: True, lambda: {"ok": 1}, token="s3cret", telemetry=telemetry
    ) as server:
        base = f"http://127.0.0.1:{server.bound_port}"
        refused = [
            ("/metrics", {}),
            ("/status", {}),
            ("/metrics", {"Authorization": "Bearer wrong"}),
            ("/status", {"Authorization": "Basic czNjcmV0"}),
            ("/metrics", {"Authorization": "s3cret"}),
        ]
        for path, headers in refused:
            async with session.get(base + path, headers=headers) as response:
                assert response.status == 401, (path, headers)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert _rejected(registry, "auth") == len(refused)
        good = {"Authorization": "Bearer s3cret"}
        async with session.get(base + "/metrics", headers=good) as response:
            assert response.status == 200
            assert "flowgauge_http_rejected_total" in await response.text()
        async with session.get(base + "/status", headers=good) as response:
            assert response.status == 200 and await response.json() == {"ok": 1}
        for probe in ("/healthz", "/readyz"):
            async with session.get(base + probe) as response:
                assert response.status == 200, probe
        assert _rejected(registry, "auth") == len(refused)


async def test_two_authorization_headers_are_a_counted_401(
    registry: CollectorRegistry, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with HttpServer("127.0.0.1", 0, registry, token="s3cret", telemetry=Telemetry(registry)) as server:
        url = f"http://127.0.0.1:{server.bound_port}/metrics"
        for pair in (("Bearer s3cret", "Bearer s3cret"), ("Bearer wrong", "Bearer s3cret")):
            headers = [("Authorization", pair[0]), ("Authorization", pair[1])]
            async with session.get(url, headers=headers) as response:
                assert response.status == 401
        assert _rejected(registry, "auth") == 2
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_a_token_that_is_not_utf8_is_a_counted_401(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Raw bytes that are not UTF-8 in the Authorization header (aiohttp keeps them as lone surrogates) were an
    HTTP 500 with a traceback per request; now a 401 like any wrong token. A right token that is not ASCII
    (sent as UTF-8) still opens /metrics."""
    caplog.set_level(logging.INFO)
    async with HttpServer("127.0.0.1", 0, registry, token="s3cr\u00e9t", telemetry=Telemetry(registry)) as server:

        async def get(token: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
            writer.write(
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " + token + b"\r\n\r\n"
            )
            await writer.drain()
            try:
                return await asyncio.wait_for(_read_to_end(reader), 5)
            finally:
                writer.close()

        for token in (b"s3cr\xff", b"\xc3\x28", b"s3cr\xe9t"):  # Latin-1, a broken sequence, the token in Latin-1
            assert (await get(token)).startswith(b"HTTP/1.1 401"), token
        assert (await get("s3cr\u00e9t".encode())).startswith(b"HTTP/1.1 200")
    assert _rejected(registry, "auth") == 3
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], "an error was logged"


async def test_refusals_are_logged_rate_limited(
    registry: CollectorRegistry, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowgauge.telemetry.http")
    async with HttpServer("127.0.0.1", 0, registry, token="s3cret", telemetry=Telemetry(registry)) as server:
        for _ in range(20):
            async with session.get(
                f"http://127.0.0.1:{server.bound_port}/status", headers={"Authorization": "Bearer wrong"}
            ) as response:
                assert response.status == 401
    assert _rejected(registry, "auth") == 20
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("http_rejected")]
    assert len(lines) == 1, lines


async def test_concurrent_scrapes_render_the_registry_once_per_interval(
    registry: CollectorRegistry, session: aiohttp.ClientSession
) -> None:
    """50 concurrent scrapers (plain and gzip) cost one rendering; after the interval, fresh values appear."""
    collector = CountingCollector()
    registry.register(collector)
    async with HttpServer("127.0.0.1", 0, registry, metrics_cache_s=0.5) as server:
        url = f"http://127.0.0.1:{server.bound_port}/metrics"

        async def scrape(gzip: bool) -> str:
            headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
            async with session.get(url, headers=headers) as response:
                assert response.status == 200
                assert response.headers.get("Content-Encoding") == ("gzip" if gzip else None)
                return await response.text()  # aiohttp decompresses gzip

        bodies = await asyncio.gather(*(scrape(i % 2 == 0) for i in range(50)))
        assert collector.collects <= 2, collector.collects  # 1, or 2 if the interval ended mid-burst
        assert len(set(bodies)) <= collector.collects
        assert "flowgauge_test_value 1.0" in bodies[0]

        collector.value = 2.0

        async def fresh() -> bool:
            return "flowgauge_test_value 2.0" in await scrape(False)

        await wait_for(fresh, "a fresh rendering after the cache interval", 5)


async def test_request_headers_trickled_byte_by_byte_are_aborted_and_counted(registry: CollectorRegistry) -> None:
    async with HttpServer(
        "127.0.0.1", 0, registry, telemetry=Telemetry(registry), header_timeout=0.5
    ) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"y" * 100 + b"\r\n\r\n"

        async def trickle() -> None:
            for byte in request:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.1)  # the slow sender's pace, not a synchronisation

        sender = asyncio.ensure_future(trickle())
        try:
            async with asyncio.timeout(3.0):  # the whole request would take 13 s to arrive
                assert await _read_to_end(reader) == b""  # closed without a response
        finally:
            sender.cancel()
            writer.close()
        assert _rejected(registry, "deadline") == 1


async def test_a_silent_connection_is_aborted_and_a_fast_keepalive_one_is_not(
    registry: CollectorRegistry, session: aiohttp.ClientSession
) -> None:
    async with HttpServer(
        "127.0.0.1", 0, registry, telemetry=Telemetry(registry), header_timeout=0.3
    ) as server:
        # A keep-alive connection that sent a complete request is idle, not slow: the deadline does not apply.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert await reader.readexactly(2) == b"ok"

        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
        try:
            async with asyncio.timeout(3.0):
                assert await _read_to_end(silent_reader) == b""
        finally:
            silent_writer.close()
        assert _rejected(registry, "deadline") == 1

        # The idle keep-alive connection outlived the silent one's deadline and still serves.
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
        writer.close()
        assert _rejected(registry, "deadline") == 1
