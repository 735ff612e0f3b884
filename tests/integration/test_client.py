"""The subscriber client (`flowgauge.EmbeddedSubscriber`) against a real embedded bus on loopback.

The point of these tests: the `async for` never ends silently when the connection goes away without the
client asking; it raises `ConnectionLost`. Connection errors are typed `SubscriberError`s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
from tests.procs import free_port
from websockets.asyncio.server import ServerConnection, serve

from flowgauge import (
    BusUnreachable,
    ConnectionLost,
    EmbeddedSubscriber,
    InvalidBusURL,
    SubscribeRejected,
    Unauthorized,
)
from flowgauge.publish.embedded import EmbeddedBus
from flowgauge.publish.topics import book_topic

pytestmark = pytest.mark.integration

TIMEOUT = 10.0
BTC = book_topic("bybit", "BTC/USDT:USDT")


@asynccontextmanager
async def bus(token: str | None = None) -> AsyncIterator[tuple[EmbeddedBus, str]]:
    async with EmbeddedBus(port=0, token=token, close_timeout=2.0) as running:
        yield running, f"ws://127.0.0.1:{running.bound_port}"


async def _first_message(running: EmbeddedBus, sub: EmbeddedSubscriber) -> tuple[str, dict[str, object]]:
    """Publish until the subscriber's iterator yields; returns what it yielded."""
    receive = asyncio.ensure_future(anext(aiter(sub)))
    async with asyncio.timeout(TIMEOUT):
        seq = 0
        while not receive.done():
            seq += 1
            running.publish(BTC, orjson.dumps({"seq": seq}))
            await asyncio.wait([receive], timeout=0.05)
    return receive.result()


async def test_iteration_raises_connection_lost_when_the_bus_closes() -> None:
    async with bus() as (running, url), EmbeddedSubscriber(url, ["flowgauge.v1.>"]) as sub:
        topic, payload = await _first_message(running, sub)
        assert topic == BTC and payload["seq"] >= 1
        await running.close()
        with pytest.raises(ConnectionLost, match=r"closed the connection: code 1001 \(server shutdown\)"):
            async with asyncio.timeout(TIMEOUT):
                async for _ in sub:
                    pass


async def test_iteration_raises_connection_lost_when_the_connection_drops() -> None:
    async def drop_after_subscribe(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(orjson.dumps({"op": "subscribed", "patterns": ["flowgauge.v1.>"]}).decode())
        await ws.send(orjson.dumps({"topic": BTC, "payload": {"seq": 1}}).decode())
        ws.transport.abort()  # no close frame: a crashed daemon or a cut network looks like this

    port = free_port()
    received = []
    async with (
        serve(drop_after_subscribe, "127.0.0.1", port),
        EmbeddedSubscriber(f"ws://127.0.0.1:{port}", ["flowgauge.v1.>"]) as sub,
    ):
        with pytest.raises(ConnectionLost, match="dropped without a close frame"):
            async with asyncio.timeout(TIMEOUT):
                async for topic, payload in sub:
                    received.append((topic, payload))
    assert received == [(BTC, {"seq": 1})]


async def test_iteration_ends_quietly_when_the_client_closes() -> None:
    async with bus() as (running, url), EmbeddedSubscriber(url, ["flowgauge.v1.>"]) as sub:
        await _first_message(running, sub)

        async def drain() -> None:
            async for _ in sub:
                pass

        draining = asyncio.ensure_future(drain())
        await sub.close()
        async with asyncio.timeout(TIMEOUT):
            await draining  # returns without ConnectionLost


async def test_connection_errors_are_typed() -> None:
    with pytest.raises(BusUnreachable, match="connection refused"):
        async with EmbeddedSubscriber(f"ws://127.0.0.1:{free_port()}", ["flowgauge.v1.>"]):
            pass
    with pytest.raises(InvalidBusURL, match="not a websocket URL"):
        async with EmbeddedSubscriber("http://127.0.0.1:8765", ["flowgauge.v1.>"]):
            pass
    async with bus(token="secret") as (_, url):
        with pytest.raises(Unauthorized, match="HTTP 401"):
            async with EmbeddedSubscriber(url, ["flowgauge.v1.>"], token="wrong"):
                pass
        with pytest.raises(SubscribeRejected, match=r"a\.\.b"):
            async with EmbeddedSubscriber(url, ["a..b"], token="secret"):
                pass
