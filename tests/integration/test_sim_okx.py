"""The OKX simulator over real loopback sockets, driven by OkxParser through a real websocket client.

Covers: REST (instruments through ccxt, books with seqId, rubik), WS snapshot then continuous updates
across a loop with every checksum verified, the text ping/pong keepalive and the 30 s idle rule,
subscription errors, gap injection caught by seqIds (REST resync) and by checksums alone (2022 stream,
WS resubscribe), garbage injection, and the REST bootstrap once the WS snapshot is gone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.sim_helpers import STEP_S, assert_serves_until_cancelled, recv, running_sim, ws_client
from websockets.asyncio.client import ClientConnection

from flowgauge.book.sync import BookSync
from flowgauge.connectors.base import FetchSnapshot
from flowgauge.connectors.markets import load_markets
from flowgauge.connectors.okx import OkxAdapter, OkxParser, okx_instrument
from flowgauge.simulate.okx import OkxSimulator, run_simulator
from flowgauge.types import (
    BadFrame,
    BookDelta,
    BookSnapshot,
    BookState,
    FundingRate,
    Instrument,
    InvalidReason,
    Liquidation,
    OpenInterest,
    Trade,
)

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "okx" / "okx-v5-2022-05.jsonl.zst"
PERPS = ("BTC-USDT-SWAP", "ETH-USDT-SWAP", "UNI-USD-SWAP")


async def _instruments(sim: OkxSimulator) -> list[Instrument]:
    markets = {m["id"]: m for m in await load_markets("okx", sim.http_url)}
    return [okx_instrument(markets[i]) for i in PERPS]


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[OkxSimulator]:
    async with running_sim(OkxSimulator, FIXTURE, request) as simulator:
        yield simulator


class Driver:
    """What the daemon does with one connection, minus the engine: parser -> BookSync per book, resyncs
    performed (frames sent, REST snapshots fetched from the simulator)."""

    def __init__(self, parser: OkxParser, http: aiohttp.ClientSession) -> None:
        self.parser = parser
        self.http = http
        self.syncs = {
            i.symbol: BookSync(OkxAdapter.sequence_rule, OkxAdapter.buffer_deltas) for i in parser.instruments.values()
        }
        self.events: Counter[tuple[str, str | None]] = Counter()
        self.bad: list[BadFrame] = []
        self.invalid: list[tuple[str, InvalidReason | None]] = []
        self.fetches = 0
        self.snapshot_seqs: dict[str, list[int]] = {}
        self.seqs: dict[str, list[int]] = {}
        self.other: list[Any] = []

    async def act(self, ws: ClientConnection, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, str):
                await ws.send(action)
            else:
                assert isinstance(action, FetchSnapshot)
                self.fetches += 1
                async with self.http.get(action.path, params=action.params) as response:
                    body = await response.read()
                await self.handle(ws, self.parser.on_snapshot(action.symbol, body, time.time_ns()))

    async def handle(self, ws: ClientConnection, events: list[Any]) -> None:
        for item in events:
            if isinstance(item, str):
                await ws.send(item)
                continue
            self.events[(type(item).__name__, getattr(item, "symbol", None))] += 1
            result = None
            if isinstance(item, BookSnapshot):
                self.snapshot_seqs.setdefault(item.symbol, []).append(item.seq)  # type: ignore[arg-type]
                result = self.syncs[item.symbol].on_snapshot(item)
            elif isinstance(item, BookDelta):
                self.seqs.setdefault(item.symbol, []).append(item.seq)
                result = self.syncs[item.symbol].on_delta(item)
            elif isinstance(item, BadFrame):
                self.bad.append(item)
                if item.touches_book and item.symbol is not None:
                    result = self.syncs[item.symbol].invalidate(
                        item.invalid_reason or InvalidReason.BAD_FRAME, item.reason
                    )
            else:
                self.other.append(item)
            if result is not None and result.needs_resync:
                symbol = item.symbol  # type: ignore[union-attr]
                self.invalid.append((symbol, self.syncs[symbol].reason))
                await self.act(ws, self.parser.resync(symbol))

    async def run(self, ws: ClientConnection, until: Callable[[], bool], connect_actions: bool = True) -> None:
        if connect_actions:
            await self.act(ws, self.parser.on_connected())
        deadline = time.monotonic() + 3 * STEP_S
        while not until():
            assert time.monotonic() < deadline, "timed out driving the simulator"
            raw = await recv(ws)
            await self.handle(ws, self.parser.feed(raw, time.time_ns()))

    def all_valid(self) -> bool:
        return all(s.state is BookState.VALID for s in self.syncs.values())


# -- REST ------------------------------------------------------------------------------------------------


async def test_rest_instruments_through_ccxt_books_and_rubik(sim: OkxSimulator) -> None:
    btc, eth, uni = await _instruments(sim)
    assert (btc.symbol, btc.contract_size, btc.kind.value) == ("BTC/USDT:USDT", 0.01, "linear")
    assert (eth.symbol, eth.contract_size) == ("ETH/USDT:USDT", pytest.approx(0.1))
    assert (uni.symbol, uni.contract_size, uni.kind.value) == ("UNI/USD:UNI", 10.0, "inverse")
    assert sim.served_instruments == ["BTC-USDT", *PERPS]
    async with aiohttp.ClientSession(sim.http_url) as http:
        async with http.get("/api/v5/public/instruments", params={"instType": "SWAP"}) as r:
            swaps = await r.json()
        assert swaps["code"] == "0" and {"BTC-USDT-SWAP", "BTC-USD-SWAP"} <= {i["instId"] for i in swaps["data"]}
        async with http.get("/api/v5/public/instruments") as r:
            assert (await r.json())["code"] != "0"
        async with http.get("/api/v5/market/books", params={"instId": "BTC-USDT-SWAP", "sz": "400"}) as r:
            book = (await r.json())["data"][0]
        assert isinstance(book["seqId"], int) and len(book["bids"]) > 20 and len(book["asks"]) > 20
        assert Decimal(book["bids"][0][0]) < Decimal(book["asks"][0][0])
        assert all(level[2] == "0" for level in book["bids"])  # the deprecated field, as OKX sends it
        async with http.get("/api/v5/market/books", params={"instId": "XRP-USDT-SWAP", "sz": "5"}) as r:
            assert (await r.json())["code"] == "51001"
        path = "/api/v5/rubik/stat/contracts/long-short-position-ratio-contract-top-trader"
        async with http.get(path, params={"instId": "ETH-USDT-SWAP", "period": "5m", "limit": "2"}) as r:
            rows = await r.text()
        request = next(p for p in OkxAdapter().polls([eth]) if p.path == path)
        (ratio,) = OkxAdapter().parse_poll(request, rows, 1)
        assert ratio.kind == "top_positions" and ratio.ratio > 0
        assert ratio.ts_exchange // 1_000_000 % 300_000 == 0  # a closed 5-minute bucket
        async with http.get("/api/v5/nope") as r:
            assert r.status == 404


# -- websocket: protocol, data, keepalive ------------------------------------------------------------------


@pytest.mark.parametrize("sim", [{"checksum": True}], indirect=True)
async def test_snapshot_then_continuous_updates_across_loops_with_checksums(sim: OkxSimulator) -> None:
    instruments = await _instruments(sim)
    parser = OkxParser(instruments)
    async with aiohttp.ClientSession(sim.http_url) as http, ws_client(sim.ws_url()) as ws:
        driver = Driver(parser, http)
        # UNI (and ETH, driven by it) trades once per loop; every 5th swap trade is mirrored as a liquidation.
        await driver.run(
            ws,
            lambda: sim.loops_completed >= 2 and min(driver.events[("Liquidation", i.symbol)] for i in instruments) > 0,
        )
    assert driver.bad == [] and driver.invalid == [] and driver.fetches == 0
    assert driver.all_valid()
    for inst in instruments:
        assert driver.events[("BookSnapshot", inst.symbol)] == 1  # no reset at the loop: the stream goes on
        assert driver.events[("BookDelta", inst.symbol)] > 150  # 92 recorded updates per loop
        seqs = driver.seqs[inst.symbol]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert driver.syncs[inst.symbol].gaps == 0
        for kind in ("Trade", "OpenInterest", "FundingRate", "Liquidation"):
            assert driver.events[(kind, inst.symbol)] > 0, (kind, inst.symbol)
    assert parser.checksums_verified > 500 and parser.checksum_mismatches == 0
    # Relabelled books sit at plausible levels in base units.
    btc = driver.syncs["BTC/USDT:USDT"].book
    eth = driver.syncs["ETH/USDT:USDT"].book
    assert 20_000 < btc.bids.best()[0] < 40_000 and 1_000 < eth.bids.best()[0] < 3_000
    oi = [e for e in driver.other if isinstance(e, OpenInterest) and e.symbol == "UNI/USD:UNI"]
    assert all(e.open_interest > 0 for e in oi)
    liqs = [e for e in driver.other if isinstance(e, Liquidation)]
    assert {e.liquidated_side for e in liqs} <= {"long", "short"}
    marks = [e for e in driver.other if isinstance(e, FundingRate) and e.mark_price and e.symbol == "BTC/USDT:USDT"]
    assert marks and all(abs(m.mark_price - 30_000) < 5_000 for m in marks)  # type: ignore[operator]
    trades = [e for e in driver.other if isinstance(e, Trade)]
    assert all(t.ts_exchange > time.time_ns() - 3600 * 10**9 for t in trades)  # times look live


async def test_subscription_errors_and_text_ping(sim: OkxSimulator) -> None:
    async with ws_client(sim.ws_url()) as ws:
        await ws.send("ping")
        assert await recv(ws) == "pong"
        await ws.send(
            json.dumps(
                {
                    "id": "7",
                    "op": "subscribe",
                    "args": [
                        {"channel": "books", "instId": "XRP-USDT-SWAP"},
                        {"channel": "candle1m", "instId": "BTC-USDT-SWAP"},
                        {"channel": "trades", "instId": "BTC-USDT-SWAP"},
                    ],
                }
            )
        )
        replies = [json.loads(await recv(ws)) for _ in range(3)]
        assert [(r["event"], r.get("code")) for r in replies] == [
            ("error", "60018"),
            ("error", "60018"),
            ("subscribe", None),
        ]
        assert replies[2]["arg"] == {"channel": "trades", "instId": "BTC-USDT-SWAP"} and replies[2]["id"] == "7"
        await ws.send("{not json")
        while (reply := json.loads(await recv(ws))).get("event") != "error":
            pass  # trades may already be flowing
        assert reply["code"] == "60012"
    parser = OkxParser([])
    (bad,) = parser.feed(json.dumps(replies[0]), 1)
    assert isinstance(bad, BadFrame) and "60018" in bad.reason


@pytest.mark.parametrize("sim", [{"idle_timeout": 0.4, "speed": 1.0}], indirect=True)
async def test_keepalive_ping_keeps_an_idle_connection_and_silence_loses_it(sim: OkxSimulator) -> None:
    parser = OkxParser([])

    async def ping(ws: ClientConnection) -> None:
        await ws.send(parser.ping_frame())  # what the session sends every ping interval
        assert parser.feed(await recv(ws), time.time_ns()) == []  # "pong", consumed

    async with ws_client(sim.ws_url()) as silent, ws_client(sim.ws_url()) as pinging:
        # Neither subscribes to anything, so nothing is pushed; the silent one also sends nothing.
        closed = asyncio.create_task(silent.wait_closed())
        started = time.monotonic()
        while not closed.done():
            assert time.monotonic() - started < STEP_S
            await ping(pinging)
            await asyncio.wait([closed], timeout=0.1)  # the ping interval (shorter than the idle rule)
        assert silent.close_code == 1008 and sim.idle_disconnects == 1
        # The pinging client goes on through two more idle periods.
        pinged_closed = asyncio.create_task(pinging.wait_closed())
        closed_at = time.monotonic()
        while time.monotonic() - closed_at < 0.8:
            await ping(pinging)
            await asyncio.wait([pinged_closed], timeout=0.1)
        assert not pinged_closed.done()
        await ping(pinging)
        pinged_closed.cancel()
    assert sim.idle_disconnects == 1


# -- injected faults and the two bootstraps ---------------------------------------------------------------


@pytest.mark.parametrize("sim", [{"gap_every": 25}], indirect=True)
async def test_gap_injection_is_caught_by_seq_ids_and_healed_by_rest(sim: OkxSimulator) -> None:
    instruments = await _instruments(sim)
    parser = OkxParser(instruments)
    async with aiohttp.ClientSession(sim.http_url) as http, ws_client(sim.ws_url()) as ws:
        driver = Driver(parser, http)
        await driver.run(ws, lambda: len(driver.invalid) >= 6 and driver.all_valid())
    assert sim.gaps_injected >= 6
    assert {reason for _, reason in driver.invalid} == {InvalidReason.GAP}
    assert driver.fetches >= 6 and sim.rest_books_served == driver.fetches  # resync = REST snapshot
    assert driver.events[("BookSnapshot", "BTC/USDT:USDT")] >= 2
    assert sum(s.gaps for s in driver.syncs.values()) == len(driver.invalid)


# At speed 5 (~45 updates/s per book) a resubscribe round trip is short next to the gap period; at speed 0
# the socket backlog would keep some book resyncing nearly all the time.
@pytest.mark.parametrize("sim", [{"gap_every": 25, "seq_ids": False, "checksum": True, "speed": 5.0}], indirect=True)
async def test_2022_stream_gap_is_caught_by_checksum_and_healed_by_resubscribing(sim: OkxSimulator) -> None:
    instruments = await _instruments(sim)
    parser = OkxParser(instruments)
    async with aiohttp.ClientSession(sim.http_url) as http, ws_client(sim.ws_url()) as ws:
        driver = Driver(parser, http)
        await driver.run(ws, lambda: len(driver.invalid) >= 4 and driver.all_valid())
    assert {reason for _, reason in driver.invalid} == {InvalidReason.CHECKSUM}
    assert parser.checksum_mismatches >= 4 and driver.fetches == 0  # no seqIds: WS snapshots only
    assert sum(s.gaps for s in driver.syncs.values()) == 0  # the ids are ours; only the checksum can tell
    for inst in instruments:
        if any(symbol == inst.symbol for symbol, _ in driver.invalid):
            assert driver.events[("BookSnapshot", inst.symbol)] >= 2


@pytest.mark.parametrize("sim", [{"garbage_every": 30}], indirect=True)
async def test_garbage_frames_become_bad_frames_and_the_book_recovers(sim: OkxSimulator) -> None:
    instruments = await _instruments(sim)
    parser = OkxParser(instruments)
    async with aiohttp.ClientSession(sim.http_url) as http, ws_client(sim.ws_url()) as ws:
        driver = Driver(parser, http)
        await driver.run(
            ws, lambda: sum(sim.garbage_by_kind.values()) >= 6 and len(driver.bad) >= 6 and driver.all_valid()
        )
    assert all(sim.garbage_by_kind[kind] >= 2 for kind in ("non_json", "bad_types", "truncated"))
    reasons = Counter(b.reason.split(":")[0] for b in driver.bad)
    assert reasons["not JSON"] >= 4 and reasons["books"] >= 2  # binary junk + truncated copies; bad types
    touched = [b for b in driver.bad if b.touches_book]
    assert touched and all(b.symbol in driver.syncs for b in touched)
    assert driver.fetches >= 1  # a bad books frame loses an update: REST resync (the stream has seqIds)


@pytest.mark.parametrize("sim", [{"ws_snapshot": False}], indirect=True)
async def test_without_the_ws_snapshot_the_parser_bootstraps_from_rest(sim: OkxSimulator) -> None:
    instruments = await _instruments(sim)
    parser = OkxParser(instruments)
    async with aiohttp.ClientSession(sim.http_url) as http, ws_client(sim.ws_url()) as ws:
        driver = Driver(parser, http)
        await driver.run(
            ws, lambda: driver.all_valid() and min(driver.events[("BookDelta", i.symbol)] for i in instruments) > 20
        )
    assert parser.ws_snapshot_gone
    assert driver.fetches == len(instruments) and sim.rest_books_served == len(instruments)
    assert all(driver.syncs[i.symbol].gaps == 0 for i in instruments)
    assert all(len(driver.snapshot_seqs[i.symbol]) == 1 for i in instruments)  # REST snapshots only
    # The next connection fetches at once (what the runtime does after on_connected).
    parser.reset()
    assert sum(isinstance(a, FetchSnapshot) for a in parser.on_connected()) == len(instruments)


@pytest.mark.parametrize("sim", [{"speed": 1.0}], indirect=True)
async def test_forced_rest_bootstrap_at_recorded_pace(sim: OkxSimulator) -> None:
    instruments = await _instruments(sim)
    parser = OkxParser(instruments, bootstrap="rest")
    async with aiohttp.ClientSession(sim.http_url) as http, ws_client(sim.ws_url()) as ws:
        driver = Driver(parser, http)
        await driver.run(ws, lambda: driver.all_valid() and driver.events[("BookDelta", "UNI/USD:UNI")] >= 5)
    assert driver.bad == [] and driver.fetches >= len(instruments)


async def test_run_simulator_serves_until_cancelled() -> None:
    async def ping(sim: OkxSimulator) -> None:
        async with ws_client(sim.ws_url()) as ws:
            await ws.send("ping")
            assert await recv(ws) == "pong"

    await assert_serves_until_cancelled(run_simulator, FIXTURE, ping)
