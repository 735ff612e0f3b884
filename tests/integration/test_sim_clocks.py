"""Every venue simulator keeps its exchange clock on the wall clock (issue 10, item 3).

Each simulator serves its packaged sample at a high speed across at least two loops of the recording; every
exchange timestamp a subscriber receives is within 1 s of the wall clock at receipt (or of the wall clock plus
`clock_skew_s`), no stream's timestamps go back, and the book streams' sequence ids keep the venue's rule across
the loop seams. Before the fix the OKX clock ran ahead by the recording's span per loop and Hyperliquid's jumped
+48 s per loop, and at speed N every clock ran N times faster than the wall.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from tests.sim_helpers import STEP_S, ws_client
from websockets.asyncio.client import ClientConnection

from flowgauge.simulate import DATA_DIR, SIMULATORS
from flowgauge.simulate.binanceusdm import BinanceUsdmSimulator
from flowgauge.simulate.bybit import BybitSimulator
from flowgauge.simulate.deribit import DeribitSimulator
from flowgauge.simulate.hyperliquid import HyperliquidSimulator
from flowgauge.simulate.okx import OkxSimulator

pytestmark = pytest.mark.integration

SPEED = 20.0
LOOPS = 2
BOUND_MS = 1000


@dataclass
class Seen:
    """What one subscriber received: (wall ms at receipt, exchange ms) per stamp, book stamps and ids per stream."""

    offsets: list[tuple[str, float, int]] = field(default_factory=list)  # (stream, wall ms, exchange ms)
    book_ts: dict[str, list[int]] = field(default_factory=dict)
    ids: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    skip_first: set[str] = field(default_factory=set)  # streams whose first message is history (sent on subscribe)

    def stamp(self, stream: str, wall: float, ts: Any) -> None:
        self.offsets.append((stream, wall, int(ts)))

    def book(self, stream: str, ts: Any, ids: tuple[Any, ...]) -> None:
        self.book_ts.setdefault(stream, []).append(int(ts))
        self.ids.setdefault(stream, []).append(ids)


def _bybit(msg: Any, wall: float, seen: Seen) -> None:
    if not isinstance(msg, dict) or "topic" not in msg:
        return
    topic = msg["topic"]
    seen.stamp(topic, wall, msg["ts"])
    if topic.startswith("orderbook."):
        seen.book(topic, msg["ts"], (msg["type"], msg["data"]["u"]))
    elif topic.startswith("publicTrade."):
        for trade in msg["data"]:
            seen.stamp(f"{topic}:T", wall, trade["T"])


def _binance(msg: Any, wall: float, seen: Seen) -> None:
    if not isinstance(msg, dict) or "stream" not in msg:
        return
    data, stream = msg["data"], msg["stream"]
    seen.stamp(stream, wall, data["E"])
    if data.get("e") == "depthUpdate":
        seen.stamp(f"{stream}:T", wall, data["T"])
        seen.book(stream, data["E"], (data["U"], data["u"], data["pu"]))
    elif data.get("e") in ("trade", "aggTrade"):
        seen.stamp(f"{stream}:T", wall, data["T"])


def _okx(msg: Any, wall: float, seen: Seen) -> None:
    if not isinstance(msg, dict) or "data" not in msg:
        return
    stream = f"{msg['arg']['channel']}:{msg['arg'].get('instId')}"
    for item in msg["data"]:
        seen.stamp(stream, wall, item["ts"])
        if msg["arg"]["channel"] == "books":
            seen.book(stream, item["ts"], (item["prevSeqId"], item["seqId"]))


def _deribit(msg: Any, wall: float, seen: Seen) -> None:
    if not isinstance(msg, dict) or msg.get("method") != "subscription":
        return
    stream, data = msg["params"]["channel"], msg["params"]["data"]
    for item in data if isinstance(data, list) else [data]:
        seen.stamp(stream, wall, item["timestamp"])
    if stream.startswith("book."):
        seen.book(stream, data["timestamp"], (data.get("prev_change_id"), data["change_id"]))


def _hyperliquid(msg: Any, wall: float, seen: Seen) -> None:
    if not isinstance(msg, dict) or msg.get("channel") not in ("l2Book", "trades"):
        return
    data = msg["data"]
    if msg["channel"] == "trades":
        stream = f"trades:{data[0]['coin']}"
        if stream in seen.skip_first:
            seen.skip_first.discard(stream)  # the venue's recent trades on subscribe: old news by design
            return
        for trade in data:
            seen.stamp(stream, wall, trade["time"])
    else:
        stream = f"l2Book:{data['coin']}"
        seen.stamp(stream, wall, data["time"])
        seen.book(stream, data["time"], ())


@dataclass(frozen=True)
class Venue:
    cls: Callable[..., Any]
    urls: Callable[[Any], list[str]]
    subscribe: list[list[dict[str, Any]]]  # per url, the requests sent
    read: Callable[[Any, float, Seen], None]
    skip_first: tuple[str, ...] = ()


VENUES = {
    "bybit": Venue(
        BybitSimulator,
        lambda s: [s.ws_url("linear")],
        [[{"op": "subscribe", "args": ["orderbook.200.BTCUSDT", "publicTrade.BTCUSDT", "tickers.BTCUSDT"]}]],
        _bybit,
    ),
    "binanceusdm": Venue(
        BinanceUsdmSimulator,
        lambda s: [s.ws_url("public"), s.ws_url("market")],
        [
            [{"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms", "ethusdt@depth@100ms"], "id": 1}],
            [{"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@markPrice@1s"], "id": 2}],
        ],
        _binance,
    ),
    "okx": Venue(
        OkxSimulator,
        lambda s: [s.ws_url()],
        [
            [
                {
                    "op": "subscribe",
                    "args": [
                        {"channel": c, "instId": i}
                        for i in ("BTC-USDT-SWAP", "ETH-USDT-SWAP")
                        for c in ("books", "trades", "mark-price", "funding-rate", "open-interest")
                    ],
                }
            ]
        ],
        _okx,
    ),
    "deribit": Venue(
        DeribitSimulator,
        lambda s: [s.ws_url()],
        [
            [
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "public/subscribe",
                    "params": {
                        "channels": [
                            f"{k}.{i}.100ms"
                            for i in ("BTC-PERPETUAL", "ETH-PERPETUAL")
                            for k in ("book", "ticker", "trades")
                        ]
                    },
                }
            ]
        ],
        _deribit,
    ),
    "hyperliquid": Venue(
        HyperliquidSimulator,
        lambda s: [s.ws_url],
        [[{"method": "subscribe", "subscription": {"type": t, "coin": "BTC"}} for t in ("l2Book", "trades")]],
        _hyperliquid,
        ("trades:BTC",),
    ),
}


async def _read(ws: ClientConnection, venue: Venue, seen: Seen) -> None:
    async for raw in ws:
        wall = time.time() * 1000
        try:
            msg = json.loads(raw)
        except (TypeError, ValueError):
            continue
        venue.read(msg, wall, seen)


async def _served(name: str, skew_s: float) -> Seen:
    venue = VENUES[name]
    recording = DATA_DIR / SIMULATORS[name].recording
    seen = Seen(skip_first=set(venue.skip_first))
    async with venue.cls(recording, port=0, speed=SPEED, loop=True, clock_skew_s=skew_s) as sim:
        readers = []
        clients = [ws_client(url) for url in venue.urls(sim)]
        sockets = [await c.__aenter__() for c in clients]
        try:
            for ws, requests in zip(sockets, venue.subscribe, strict=True):
                for request in requests:
                    await ws.send(json.dumps(request))
                readers.append(asyncio.create_task(_read(ws, venue, seen)))
            deadline = time.monotonic() + 6 * STEP_S
            while sim.loops_completed < LOOPS:
                assert time.monotonic() < deadline, f"{name}: {sim.loops_completed} loops played"
                assert not any(r.done() for r in readers), f"{name}: a subscriber stopped"
                await asyncio.sleep(0.05)
        finally:
            for r in readers:
                r.cancel()
            if readers:
                await asyncio.wait(readers)  # a client drains itself while closing
            for c in reversed(clients):
                await c.__aexit__(None, None, None)
    return seen


def _check_ids(name: str, stream: str, ids: list[tuple[Any, ...]]) -> None:
    """The venue's sequence rule holds on every consecutive pair, loop seams included."""
    for prev, cur in itertools.pairwise(ids):
        if name == "bybit":
            kind, u = cur
            assert u > prev[1], (stream, prev, cur)
            if kind == "delta":
                assert u == prev[1] + 1, (stream, prev, cur)
        elif name == "binanceusdm":
            assert cur[2] == prev[1], (stream, prev, cur)  # pu == previous u
        elif name in ("okx", "deribit"):
            assert cur[0] == prev[1], (stream, prev, cur)  # prevSeqId / prev_change_id == previous id


@pytest.mark.parametrize("name", sorted(VENUES))
@pytest.mark.parametrize("skew_s", [0.0, 5.0])
async def test_exchange_clock_follows_wall_clock_across_loops(name: str, skew_s: float) -> None:
    seen = await _served(name, skew_s)
    assert seen.book_ts, f"{name}: no book frames"
    assert len(seen.offsets) > 50, f"{name}: only {len(seen.offsets)} stamps"
    skew_ms = skew_s * 1000
    worst = max(seen.offsets, key=lambda o: abs(o[2] - o[1] - skew_ms))
    off = worst[2] - worst[1] - skew_ms
    assert abs(off) <= BOUND_MS, f"{name}: {worst[0]} stamped {off:+.0f} ms from the (skewed) wall clock"
    for stream, ids in seen.ids.items():
        _check_ids(name, stream, ids)
    # Every stream's stamps (per field) in the order received (books, trades, tickers, marks, funding) go forward.
    by_stream: dict[str, list[int]] = {}
    for stream, _, ts in seen.offsets:
        by_stream.setdefault(stream, []).append(ts)
    for stream, stamps in by_stream.items():
        back = [(a, b) for a, b in itertools.pairwise(stamps) if b < a]
        assert not back, f"{name}: {stream} went back in time {back[:3]}"
