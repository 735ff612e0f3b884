"""cause_class on real exceptions, produced for real against loopback servers (and the `.invalid` TLD,
which resolves to NXDOMAIN without any network): through aiohttp (REST), websockets (streams) and ccxt
(markets, which wraps the aiohttp error, or hides the HTTP status behind its own types)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from flowgauge.connectors.failures import CAUSE_CLASSES, HttpStatusError, cause_class, describe, http_cause
from flowgauge.connectors.markets import MarketsError, load_markets

pytestmark = pytest.mark.integration

UNRESOLVABLE = "flowgauge-test.invalid"  # RFC 6761: never resolves


@dataclass
class Servers:
    closed_port: int  # nothing listens here
    http_port: int  # plain HTTP answering 403 to everything (a geo-block)
    silent_port: int  # accepts TCP, never answers


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    async def forbidden(request: web.Request) -> web.Response:
        return web.Response(status=403, text="Forbidden: not available in your region")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forbidden)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = runner.addresses[0][1]

    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep the connection open and say nothing

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    try:
        yield Servers(_closed_port(), http_port, silent_port)
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()
        await runner.cleanup()


async def _raised(action: Callable[[], Awaitable[object]]) -> BaseException:
    try:
        await action()
    except Exception as exc:
        return exc
    raise AssertionError("expected a failure")


async def _get(url: str, timeout_s: float = 5.0) -> None:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.get(url, raise_for_status=True) as response,
    ):
        await response.read()


async def _ws(url: str, timeout_s: float = 5.0) -> None:
    async with connect(url, open_timeout=timeout_s):
        pass


# ------------------------------------------------------------------------------------------ aiohttp (REST)


async def test_rest_closed_port_is_connect(servers: Servers) -> None:
    exc = await _raised(lambda: _get(f"http://127.0.0.1:{servers.closed_port}/"))
    assert isinstance(exc, aiohttp.ClientConnectorError)
    assert cause_class(exc) == "connect"


async def test_rest_unresolvable_host_is_dns() -> None:
    exc = await _raised(lambda: _get(f"http://{UNRESOLVABLE}/"))
    # aiohttp's DNS error is itself an OSError and a connector error: dns must win over connect.
    assert isinstance(exc, OSError)
    assert cause_class(exc) == "dns"


async def test_rest_tls_to_a_plain_http_server_is_tls(servers: Servers) -> None:
    exc = await _raised(lambda: _get(f"https://127.0.0.1:{servers.http_port}/"))
    assert cause_class(exc) == "tls"


async def test_rest_403_is_http_403(servers: Servers) -> None:
    exc = await _raised(lambda: _get(f"http://127.0.0.1:{servers.http_port}/v5/market/instruments-info"))
    assert isinstance(exc, aiohttp.ClientResponseError)
    assert cause_class(exc) == "http_403"


async def test_rest_silent_server_is_timeout(servers: Servers) -> None:
    exc = await _raised(lambda: _get(f"http://127.0.0.1:{servers.silent_port}/", timeout_s=0.3))
    assert cause_class(exc) == "timeout"


# ------------------------------------------------------------------------------------------ websockets


async def test_ws_closed_port_is_connect(servers: Servers) -> None:
    exc = await _raised(lambda: _ws(f"ws://127.0.0.1:{servers.closed_port}/"))
    assert isinstance(exc, ConnectionRefusedError)
    assert cause_class(exc) == "connect"


async def test_ws_unresolvable_host_is_dns() -> None:
    exc = await _raised(lambda: _ws(f"ws://{UNRESOLVABLE}/"))
    assert isinstance(exc, socket.gaierror)
    assert cause_class(exc) == "dns"


async def test_ws_tls_to_a_plain_http_server_is_tls(servers: Servers) -> None:
    exc = await _raised(lambda: _ws(f"wss://127.0.0.1:{servers.http_port}/"))
    assert cause_class(exc) == "tls"


async def test_ws_upgrade_answered_403_is_http_403(servers: Servers) -> None:
    exc = await _raised(lambda: _ws(f"ws://127.0.0.1:{servers.http_port}/v5/public/linear"))
    assert cause_class(exc) == "http_403"


async def test_ws_silent_server_is_timeout(servers: Servers) -> None:
    exc = await _raised(lambda: _ws(f"ws://127.0.0.1:{servers.silent_port}/", timeout_s=0.3))
    assert cause_class(exc) == "timeout"


async def test_ws_upgrade_answered_200_is_protocol() -> None:
    # A URL that is not a websocket endpoint (an ordinary web page): not an error status, a wrong protocol.
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        exc = await _raised(lambda: _ws(f"ws://127.0.0.1:{runner.addresses[0][1]}/"))
    finally:
        await runner.cleanup()
    assert cause_class(exc) == "protocol"


async def test_ws_connection_closed_by_the_venue_is_closed() -> None:
    async def close_at_once(ws: object) -> None:
        await ws.close(1012, "restarting")  # type: ignore[attr-defined]

    async with serve(close_at_once, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]

        async def receive() -> None:
            async with connect(f"ws://127.0.0.1:{port}/") as ws:
                await ws.recv()

        exc = await _raised(receive)
    assert cause_class(exc) == "closed"


# ------------------------------------------------------------------------------------------ ccxt (markets)


async def test_markets_closed_port_is_connect_through_ccxt(servers: Servers) -> None:
    exc = await _raised(lambda: load_markets("bybit", f"http://127.0.0.1:{servers.closed_port}", 5.0))
    assert isinstance(exc, MarketsError)
    # ccxt wraps: MarketsError <- ExchangeNotAvailable <- ClientConnectorError <- ConnectionRefusedError
    assert type(exc.__cause__).__module__.startswith("ccxt")
    assert cause_class(exc) == exc.cause == "connect"
    assert "(connect)" in str(exc) and "Connect call failed" in str(exc)


async def test_markets_unresolvable_host_is_dns_through_ccxt() -> None:
    exc = await _raised(lambda: load_markets("bybit", f"http://{UNRESOLVABLE}", 5.0))
    assert isinstance(exc, MarketsError)
    assert exc.cause == "dns"


async def test_markets_tls_failure_is_tls_through_ccxt(servers: Servers) -> None:
    exc = await _raised(lambda: load_markets("bybit", f"https://127.0.0.1:{servers.http_port}", 5.0))
    assert isinstance(exc, MarketsError)
    assert exc.cause == "tls"


async def test_markets_403_is_http_403_not_ccxts_rate_limit(servers: Servers) -> None:
    # Left to itself ccxt turns Bybit's 403 into RateLimitExceeded and drops the status.
    exc = await _raised(lambda: load_markets("bybit", f"http://127.0.0.1:{servers.http_port}", 5.0))
    assert isinstance(exc, MarketsError)
    assert exc.cause == "http_403"
    assert "HTTP 403" in str(exc)


async def test_markets_silent_server_is_timeout_through_ccxt(servers: Servers) -> None:
    exc = await _raised(lambda: load_markets("bybit", f"http://127.0.0.1:{servers.silent_port}", 0.3))
    assert isinstance(exc, MarketsError)
    assert type(exc.__cause__).__name__ == "RequestTimeout"
    assert exc.cause == "timeout"
    assert "CancelledError" not in str(exc)


async def test_ccxt_request_timeout_without_a_chain_is_timeout() -> None:
    import ccxt

    assert cause_class(ccxt.RequestTimeout("bybit GET /x")) == "timeout"


# ------------------------------------------------------------------------------------------ vocabulary


def test_http_statuses_fold_into_a_bounded_vocabulary() -> None:
    assert http_cause(403) == "http_403"
    assert http_cause(451) == "http_451"
    assert http_cause(422) == "http_4xx"
    assert http_cause(599) == "http_5xx"
    assert http_cause(200) == "protocol"
    codes = {http_cause(status) for status in range(100, 600)}
    assert codes <= set(CAUSE_CLASSES)
    assert len(CAUSE_CLASSES) == len(set(CAUSE_CLASSES)) < 30


def test_the_most_specific_cause_in_a_chain_wins() -> None:
    # A status raised while handling a connection error still reports the status.
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError:
            raise HttpStatusError(451, "Unavailable For Legal Reasons") from None
    except HttpStatusError as exc:
        assert exc.__context__ is not None
        assert cause_class(exc) == "http_451"


def test_unknown_exceptions_are_other_and_cycles_terminate() -> None:
    first, second = KeyError("a"), ValueError("b")
    first.__context__ = second
    second.__context__ = first
    assert cause_class(first) == "other"
    assert describe(first).startswith("KeyError")
