"""The Bybit simulator's fault injection and ground truth over real loopback sockets (issue 10 items 1-2).

What a client sees of each fault, and that the truth served at /_flowgauge/truth is the book a client builds from
the frames it received. The daemon against all of them: tests/integration/test_faults_bybit.py.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.sim_helpers import STEP_S, recv, recv_json, until, ws_client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from flowgauge.simulate.bybit import BybitSimulator
from flowgauge.simulate.faults import parse_fault
from flowgauge.simulate.truth import TruthRecord

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bybit" / "bybit-linear-2026-08.jsonl.zst"
BTC_BOOK = "orderbook.200.BTCUSDT"


async def _subscribe(ws: ClientConnection, *topics: str) -> dict[str, Any]:
    await ws.send(json.dumps({"op": "subscribe", "args": list(topics), "req_id": "r1"}))
    while True:
        msg = await recv_json(ws)
        if msg.get("op") == "subscribe":
            return msg


async def _book_frames(ws: ClientConnection) -> AsyncIterator[dict[str, Any]]:
    while True:
        msg = await recv_json(ws)
        if msg.get("topic") == BTC_BOOK:
            yield msg


def _started(*faults: str, speed: float = 0.0) -> BybitSimulator:
    sim = BybitSimulator(FIXTURE, port=0, speed=speed)
    sim.configure([parse_fault(f) for f in faults])
    return sim


async def test_truth_is_the_book_a_client_builds() -> None:
    async with _started() as sim, ws_client(sim.ws_url()) as ws:
        assert (await _subscribe(ws, BTC_BOOK))["success"]
        bids: dict[float, float] = {}
        asks: dict[float, float] = {}
        last_u = 0
        frames = _book_frames(ws)
        for _ in range(300):
            msg = await anext(frames)
            if msg["type"] == "snapshot":
                bids.clear()
                asks.clear()
            for side, levels in ((bids, msg["data"]["b"]), (asks, msg["data"]["a"])):
                for price, size in levels:
                    if float(size) == 0:
                        side.pop(float(price), None)
                    else:
                        side[float(price)] = float(size)
            last_u = msg["data"]["u"]
        async with (
            aiohttp.ClientSession(sim.http_url) as http,
            http.get("/_flowgauge/truth", params={"instrument": "BTCUSDT", "seq": str(last_u)}) as answer,
        ):
            assert answer.status == 200
            record = TruthRecord.from_json(await answer.json())
        assert record.key == last_u
        assert record.bids == tuple((p, bids[p]) for p in heapq.nlargest(10, bids))
        assert record.asks == tuple((p, asks[p]) for p in heapq.nsmallest(10, asks))
        stats = sim.truth.stats()["instruments"]["BTCUSDT"]
        assert stats["evicted"] == 0 and stats["records"] >= 300


async def test_withheld_and_shifted_ids_show_as_gaps() -> None:
    async with (
        _started("drop_diff:every=10,count=3,instrument=BTCUSDT", "seq_gap:by=1000,after_frames=60") as sim,
        ws_client(sim.ws_url()) as ws,
    ):
        await _subscribe(ws, BTC_BOOK)
        frames = _book_frames(ws)
        us = [(await anext(frames))["data"]["u"] for _ in range(120)]
        jumps = [b - a for a, b in itertools.pairwise(us) if b != a + 1]
        assert sorted(jumps) == [2, 2, 2, 1001]
        assert sim.faults.fired == {"drop_diff": 3, "seq_gap": 1}
        # The truth has every id the market applied, the withheld ones too.
        withheld = [a + 1 for a, b in itertools.pairwise(us) if b == a + 2]
        assert len(withheld) == 3 and all(sim.truth.get("BTCUSDT", u) is not None for u in withheld)


async def test_u1_restart_resends_the_book_and_counts_on_from_1() -> None:
    async with _started("u1_restart:after_frames=20,instrument=BTCUSDT") as sim, ws_client(sim.ws_url()) as ws:
        await _subscribe(ws, BTC_BOOK)
        frames = _book_frames(ws)
        seen = [await anext(frames) for _ in range(40)]
        restart = next(i for i, m in enumerate(seen) if m["data"]["u"] == 1)
        assert seen[restart]["type"] == "snapshot" and len(seen[restart]["data"]["b"]) > 10
        assert [m["data"]["u"] for m in seen[restart : restart + 4]] == [1, 2, 3, 4]
        assert sim.truth.get("BTCUSDT", 1) is not None and sim.truth.get("BTCUSDT", 1).snapshot  # type: ignore[union-attr]


async def test_broken_frames_replace_a_delta() -> None:
    async with (
        _started(
            "malformed_json:after_frames=5,instrument=BTCUSDT",
            "truncated_frame:after_frames=10,instrument=BTCUSDT",
            "duplicate_diff:after_frames=15,instrument=BTCUSDT",
            "reorder_diff:after_frames=20,instrument=BTCUSDT",
        ) as sim,
        ws_client(sim.ws_url()) as ws,
    ):
        await _subscribe(ws, BTC_BOOK)
        texts: list[str] = []
        while len(texts) < 40:
            text = await recv(ws)
            assert isinstance(text, str)
            if BTC_BOOK in text[:60]:
                texts.append(text)
        broken = []
        us = []
        for text in texts:
            try:
                us.append(json.loads(text)["data"]["u"])
            except json.JSONDecodeError:
                broken.append(text)
        assert len(broken) == 2  # the malformed one and the truncated one
        # The duplicate: twice in a row, then once more (stale) after the next delta.
        assert any(us[i] == us[i + 1] == us[i + 3] < us[i + 2] for i in range(len(us) - 3)), us
        # The reordered pair: an id first seen after a higher one (not the duplicate's stale copy).
        assert any(b < a and b not in us[: i + 1] for i, (a, b) in enumerate(itertools.pairwise(us))), us
        assert sum(sim.faults.fired.values()) == 4


async def test_conn_limit_resets_then_refuses_upgrades() -> None:
    async with _started("conn_limit:refuse=2,after_frames=5") as sim:
        async with ws_client(sim.ws_url()) as ws:
            await _subscribe(ws, BTC_BOOK)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(STEP_S):
                    while True:
                        await ws.recv()
        for _ in range(2):
            with pytest.raises(InvalidStatus) as refused:
                await connect(sim.ws_url(), open_timeout=STEP_S)
            assert refused.value.response.status_code == 429
        async with ws_client(sim.ws_url()) as ws:
            assert (await _subscribe(ws, BTC_BOOK))["success"]
        assert sim.upgrades_refused == 2


async def test_half_open_is_silent_then_reset() -> None:
    async with _started("half_open:for_s=1.5,after_frames=5", speed=1.0) as sim, ws_client(sim.ws_url()) as ws:
        await _subscribe(ws, BTC_BOOK)
        await until(lambda: sim.faults.fired["half_open"], "the half-open fault")
        started = time.monotonic()
        pong = await ws.ping()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                while True:
                    await ws.recv()  # nothing arrives, not even a close
        assert not pong.done()  # the ping went unanswered
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(STEP_S):
                await ws.recv()
        assert time.monotonic() - started >= 1.0
        assert ws.close_code is None or ws.close_code == 1006  # reset, no close frame


async def test_rate_limit_sub_error_and_slow_snapshot() -> None:
    async with (
        _started(
            "rate_limit:count=1,status=418,retry_after=7,path=/v5/market/time",
            "sub_error:count=1,instrument=BTCUSDT",
            "slow_snapshot:delay_s=0.5,instrument=ETHUSDT",
        ) as sim,
        aiohttp.ClientSession(sim.http_url) as http,
    ):
        async with http.get("/v5/market/time") as first:
            assert first.status == 418 and first.headers["Retry-After"] == "7"
        async with http.get("/v5/market/time") as second:
            assert second.status == 200
        async with ws_client(sim.ws_url()) as ws:
            ack = await _subscribe(ws, BTC_BOOK, "tickers.BTCUSDT")
            assert not ack["success"] and BTC_BOOK in ack["ret_msg"]
            assert ws  # still open: only the book topic was refused
            assert (await _subscribe(ws, BTC_BOOK))["success"]  # the fault fired once
            asked = time.monotonic()
            assert (await _subscribe(ws, "orderbook.200.ETHUSDT"))["success"]
            while True:
                msg = await recv_json(ws)
                if msg.get("topic") == "orderbook.200.ETHUSDT":
                    break
            assert msg["type"] == "snapshot" and time.monotonic() - asked >= 0.45
        async with http.get("/_flowgauge/faults") as report:
            fired = (await report.json())["fired"]
        assert fired == {"rate_limit": 1, "sub_error": 1, "slow_snapshot": 1}
