"""Instrument metadata answered 429/418: the MarketsError carries the venue's Retry-After, which the daemon's retry
loop honours (issue 10 item 1: 429/418 with Retry-After; seen with the Hyperliquid fault test, whose first POST /info
was retried after the loader's own 0.5 s instead of the 1.5 s asked). Real ccxt against a real loopback server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from flowgauge.connectors.markets import MarketsError, load_markets


@pytest.fixture
async def venue(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    status, header = request.param

    async def answer(_: web.Request) -> web.Response:
        headers = {"Retry-After": header} if header is not None else {}
        return web.json_response({"error": "rate limited"}, status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("venue", "want"),
    [((429, "7"), 7.0), ((418, "30"), 30.0), ((429, None), 10.0), ((418, None), 120.0)],
    indirect=["venue"],
)
async def test_a_rate_limited_metadata_load_says_how_long_to_wait(venue: str, want: float) -> None:
    with pytest.raises(MarketsError) as caught:
        await load_markets("hyperliquid", venue, timeout_s=5)
    assert caught.value.cause is not None and caught.value.retry_after_s == want


@pytest.mark.parametrize("venue", [(503, "7")], indirect=True)
async def test_other_failures_carry_no_retry_after(venue: str) -> None:
    with pytest.raises(MarketsError) as caught:
        await load_markets("hyperliquid", venue, timeout_s=5)
    assert caught.value.retry_after_s is None
