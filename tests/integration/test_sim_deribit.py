"""The Deribit simulator over real loopback sockets, driven by our Deribit parser through a real websocket client.

What the daemon relies on: ccxt loads the markets from the simulator's REST API; on the websocket the parser's
own frames (heartbeat setup, subscriptions) get a snapshot then a continuous `prev_change_id` chain for the
relabelled BTC/ETH perpetuals, `test_request`s are answered with the parser's `public/test`, and injected gaps
and garbage are seen by the parser and the book sync, then repaired by the parser's resync frames.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.sim_helpers import (
    STEP_S,
    assert_close_says_going_away,
    assert_serves_until_cancelled,
    recv,
    recv_json,
    running_sim,
    until,
    ws_client,
)
from websockets.asyncio.client import ClientConnection

from flowgauge.book.sync import BookSync
from flowgauge.connectors import deribit
from flowgauge.connectors.deribit import DeribitAdapter, DeribitParser
from flowgauge.connectors.markets import load_markets, markets_from_recording
from flowgauge.recording import Http, iter_records
from flowgauge.simulate.deribit import DeribitSimulator, run_simulator
from flowgauge.types import BadFrame, BookDelta, BookSnapshot, BookState, Instrument, InvalidReason

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "deribit" / "deribit-2021-07.jsonl.zst"
BTC_BOOK = "book.BTC-PERPETUAL.100ms"


@pytest.fixture(scope="module")
def instruments() -> dict[str, Instrument]:
    http = [(r.url, r.data) for r in iter_records(FIXTURE) if isinstance(r, Http)]
    out = {}
    for market in markets_from_recording("deribit", deribit.recorded_market_responses(http)):
        instrument = deribit.instrument_from_deribit_market(market)
        if instrument is not None:
            out[instrument.venue_id] = instrument
    return out


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[DeribitSimulator]:
    # Heartbeats run at the venue's pace (a requested 10 s is 10 s, longer than any test here) unless a test
    # shortens them: a client has one period to answer a test_request, and a shortened period is a tight
    # timeout on how fast a test reads on a loaded machine.
    async with running_sim(DeribitSimulator, FIXTURE, request, heartbeat_time_scale=1.0) as simulator:
        yield simulator


async def _call(ws: ClientConnection, req_id: int, method: str, **params: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}))
    while True:  # notifications of channels subscribed earlier may precede the answer
        msg = await recv_json(ws)
        if msg.get("id") == req_id:
            return msg


class Driver:
    """What the daemon's session and engine do with a parser, minus the metrics: books under the Deribit rule,
    frames the parser returns are sent, a book gone wrong is resynced with the parser's resync frames."""

    def __init__(self, ws: ClientConnection, parser: DeribitParser) -> None:
        self.ws = ws
        self.parser = parser
        self.syncs = {i.symbol: BookSync(DeribitAdapter.sequence_rule) for i in parser.instruments.values()}
        self.snapshots: dict[str, int] = dict.fromkeys(self.syncs, 0)
        self.applied: dict[str, int] = dict.fromkeys(self.syncs, 0)
        self.bad: list[BadFrame] = []
        self.answers_sent = 0
        self.resyncs_sent = 0

    async def start(self) -> None:
        for frame in self.parser.on_connected():
            assert isinstance(frame, str)
            await self.ws.send(frame)

    async def pump(self, done: Callable[[], bool], what: str, timeout_s: float = STEP_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            raw = await recv(self.ws)
            for item in self.parser.feed(raw, time.time_ns()):
                await self._handle(item)

    async def _handle(self, item: object) -> None:
        if isinstance(item, str):
            self.answers_sent += 1
            await self.ws.send(item)
        elif isinstance(item, BookSnapshot):
            self.snapshots[item.symbol] += 1
            self.syncs[item.symbol].on_snapshot(item)
        elif isinstance(item, BookDelta):
            result = self.syncs[item.symbol].on_delta(item)
            self.applied[item.symbol] += result.applied
            if result.needs_resync:
                await self._resync(item.symbol)
        elif isinstance(item, BadFrame):
            self.bad.append(item)
            symbol = item.symbol if item.touches_book else None
            if symbol is not None and self.syncs[symbol].invalidate(InvalidReason.BAD_FRAME, item.reason).needs_resync:
                await self._resync(symbol)

    async def _resync(self, symbol: str) -> None:
        self.resyncs_sent += 1
        for frame in self.parser.resync(symbol):
            assert isinstance(frame, str)
            await self.ws.send(frame)


def _perps(instruments: dict[str, Instrument], **options: Any) -> DeribitParser:
    options.setdefault("best_quote", False)  # the book protocol alone (best quotes: test_sim_best_quotes.py)
    return DeribitParser([instruments["BTC-PERPETUAL"], instruments["ETH-PERPETUAL"]], heartbeat_s=10, **options)


# -- REST ------------------------------------------------------------------------------------------


async def test_ccxt_loads_the_perpetuals_and_options_from_the_simulator(sim: DeribitSimulator) -> None:
    markets = {m["id"]: m for m in await load_markets("deribit", sim.http_url)}
    btc = deribit.instrument_from_deribit_market(markets["BTC-PERPETUAL"])
    eth = deribit.instrument_from_deribit_market(markets["ETH-PERPETUAL"])
    assert btc is not None and eth is not None
    assert (btc.symbol, btc.kind.value, btc.contract_size, btc.tick_size) == ("BTC/USD:BTC", "inverse", 10.0, 0.5)
    assert (eth.symbol, eth.kind.value, eth.contract_size, eth.tick_size) == ("ETH/USD:ETH", "inverse", 1.0, 0.05)
    option = deribit.instrument_from_deribit_market(markets["BTC-24SEP21-8000-P"])
    assert option is not None and option.derivative and option.category == "option"
    assert markets["BTC_USDC-PERPETUAL"]["linear"] is True


async def test_rest_answers_like_the_venue(sim: DeribitSimulator) -> None:
    async with aiohttp.ClientSession(sim.http_url) as http:
        async with http.get("/api/v2/public/get_instruments", params={"currency": "ETH", "kind": "future"}) as r:
            body = await r.json()
        assert r.status == 200 and body["jsonrpc"] == "2.0" and body["testnet"] is False
        names = {row["instrument_name"] for row in body["result"]}
        assert "ETH-PERPETUAL" in names and all(n.startswith("ETH-") for n in names) and len(names) == 8
        eth_perp = next(row for row in body["result"] if row["instrument_name"] == "ETH-PERPETUAL")
        # A 2021 row, served with the fields Deribit sends today.
        assert (eth_perp["counter_currency"], eth_perp["settlement_currency"], eth_perp["future_type"]) == (
            "USD",
            "ETH",
            "reversed",
        )
        async with http.get("/api/v2/public/get_instruments", params={"currency": "any", "expired": "true"}) as r:
            assert (await r.json())["result"] == []
        async with http.get("/api/v2/public/get_instruments", params={"currency": "DOGE"}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == -32602
        async with http.get("/api/v2/public/get_currencies") as r:
            assert {c["currency"] for c in (await r.json())["result"]} == {"BTC", "ETH", "SOL", "USDC"}
        async with http.get("/api/v2/public/get_time") as r:
            assert abs((await r.json())["result"] - time.time() * 1000) < 5_000
        async with http.get("/api/v2/public/nonsense") as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == -32601


# -- the parser against the simulator ---------------------------------------------------------------


async def test_parser_gets_snapshots_then_a_continuous_chain(sim: DeribitSimulator, instruments) -> None:
    assert sim.relabelled == {"BTC-PERPETUAL": "BTC-24SEP21-8000-P", "ETH-PERPETUAL": "ETH-30JUL21-2800-C"}
    async with ws_client(sim.ws_url()) as ws:
        driver = Driver(ws, _perps(instruments))
        await driver.start()
        await driver.pump(
            lambda: driver.applied["BTC/USD:BTC"] >= 60 and driver.applied["ETH/USD:ETH"] >= 2,
            "continuous changes on both books",
        )
        for symbol, sync in driver.syncs.items():
            assert driver.snapshots[symbol] == 1 and sync.gaps == 0 and sync.state is BookState.VALID
        assert driver.bad == [] and driver.resyncs_sent == 0
        assert sim.loops_completed >= 1  # the chain held across the loop seam: no second snapshot, no gap
        # Inverse sizes arrive as USD and leave the parser in BTC: the relabelled best bid is ~153 BTC.
        bid_price, bid_size = driver.syncs["BTC/USD:BTC"].book.bids.best()
        assert 20_000 < bid_price < 50_000 and bid_size == pytest.approx(153.1, rel=0.01)


# heartbeat_s=10 runs as 0.5 s here, and a small client queue keeps each test_request a few frames behind what
# the reader reads: the reader's answer is due within one period even when it reads slowly.
@pytest.mark.parametrize("sim", [{"heartbeat_time_scale": 0.05, "client_queue": 64}], indirect=True)
async def test_test_requests_are_answered_and_keep_the_connection(sim: DeribitSimulator, instruments) -> None:
    async with ws_client(sim.ws_url()) as ws:
        driver = Driver(ws, _perps(instruments))
        await driver.start()
        # Several test_requests come and go while books stream.
        await driver.pump(lambda: sim.tests_answered >= 3, "three answered test requests", timeout_s=4 * STEP_S)
        assert driver.answers_sent >= 3 and sim.heartbeat_disconnects == 0
        assert all(sync.state is BookState.VALID for sync in driver.syncs.values())


@pytest.mark.parametrize("sim", [{"heartbeat_time_scale": 0.05}], indirect=True)
async def test_unanswered_test_request_closes_the_connection(sim: DeribitSimulator) -> None:
    async with ws_client(sim.ws_url()) as ws:
        assert (await _call(ws, 1, "public/set_heartbeat", interval=10))["result"] == "ok"
        note = await recv_json(ws)
        assert note == {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}
        async with asyncio.timeout(STEP_S):
            await ws.wait_closed()
        assert ws.close_code == 1008
    assert sim.heartbeat_disconnects == 1


async def test_requests_the_venue_refuses(sim: DeribitSimulator, instruments) -> None:
    async with ws_client(sim.ws_url()) as ws:
        short = await _call(ws, 1, "public/set_heartbeat", interval=5)
        assert short["error"]["code"] == -32602
        raw = await _call(ws, 2, "public/subscribe", channels=["book.BTC-PERPETUAL.raw"])
        assert raw["error"] == {"message": "raw_subscriptions_not_available_for_unauthorized", "code": 13778}
        (bad,) = DeribitParser([instruments["BTC-PERPETUAL"]]).feed(json.dumps(raw), 1)
        assert isinstance(bad, BadFrame) and "13778" in bad.reason
        odd = await _call(ws, 3, "public/subscribe", channels=["book.BTC-PERPETUAL.100ms", "weird"])
        assert odd["result"] == ["book.BTC-PERPETUAL.100ms"]
        assert (await _call(ws, 4, "private/buy"))["error"]["code"] == -32601
        assert (await _call(ws, 5, "public/test"))["result"] == {"version": "1.2.26"}
    assert sim.bad_requests == 3


# A small client queue keeps the speed-0 market close behind the reader, so the second subscription lands
# mid-recording rather than just before a loop's seam.
@pytest.mark.parametrize("sim", [{"client_queue": 16}], indirect=True)
async def test_late_subscriber_snapshot_equals_the_book_built_from_the_stream(sim: DeribitSimulator) -> None:
    def apply(book: dict[str, dict[float, float]], data: dict[str, Any]) -> None:
        if data["type"] == "snapshot":
            book["bids"].clear()
            book["asks"].clear()
        for side in ("bids", "asks"):
            for action, price, amount in data[side]:
                if action == "delete":
                    book[side].pop(price, None)
                else:
                    book[side][price] = amount

    async def book_frames(ws: ClientConnection) -> AsyncIterator[dict[str, Any]]:
        while True:
            msg = await recv_json(ws)
            if msg.get("params", {}).get("channel") == BTC_BOOK:
                yield msg["params"]["data"]

    book: dict[str, dict[float, float]] = {"bids": {}, "asks": {}}
    async with ws_client(sim.ws_url()) as early, ws_client(sim.ws_url()) as late:
        await _call(early, 1, "public/subscribe", channels=[BTC_BOOK])
        early_frames = book_frames(early)
        for _ in range(25):
            apply(book, await anext(early_frames))
        await _call(late, 1, "public/subscribe", channels=[BTC_BOOK])
        snap = await anext(book_frames(late))
        assert snap["type"] == "snapshot"
        change_id = -1
        while change_id < snap["change_id"]:
            data = await anext(early_frames)
            apply(book, data)
            change_id = data["change_id"]
        assert change_id == snap["change_id"]
        assert {side: {p: a for _, p, a in snap[side]} for side in ("bids", "asks")} == book
        nxt = await anext(book_frames(late))
        assert nxt["type"] == "change" and nxt["prev_change_id"] == snap["change_id"]


# -- injected faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("sim", [{"gap_every": 5}], indirect=True)
async def test_injected_gaps_are_detected_and_repaired_by_resubscribing(sim: DeribitSimulator, instruments) -> None:
    async with ws_client(sim.ws_url()) as ws:
        driver = Driver(ws, _perps(instruments))
        await driver.start()
        btc = driver.syncs["BTC/USD:BTC"]
        await driver.pump(lambda: btc.gaps >= 3 and btc.state is BookState.VALID, "three repaired gaps")
        assert sim.gaps_injected >= btc.gaps and btc.reason is None
        assert driver.snapshots["BTC/USD:BTC"] >= 4  # one per (re)subscription
        assert driver.resyncs_sent >= 3


@pytest.mark.parametrize("sim", [{"garbage_every": 4}], indirect=True)
async def test_injected_garbage_becomes_bad_frames_and_book_resyncs(sim: DeribitSimulator, instruments) -> None:
    async with ws_client(sim.ws_url()) as ws:
        driver = Driver(ws, _perps(instruments))
        await driver.start()
        await driver.pump(
            lambda: len(driver.bad) >= 9 and all(s.state is BookState.VALID for s in driver.syncs.values()),
            "every garbage kind, and books valid again",
        )
        reasons = " | ".join(b.reason for b in driver.bad)
        assert "not JSON" in reasons and "book:" in reasons
        assert any(b.touches_book for b in driver.bad)  # the typed-wrong book change
        assert driver.resyncs_sent >= 1
        assert all(sim.garbage_by_kind[k] >= 3 for k in ("non_json", "bad_types", "truncated"))


@pytest.mark.parametrize("sim", [{"client_queue": 8, "slow_client_timeout": 0.2}], indirect=True)
async def test_client_that_stops_reading_is_disconnected_not_buffered(sim: DeribitSimulator) -> None:
    async with ws_client(sim.ws_url(), max_queue=1) as stalled, ws_client(sim.ws_url()) as healthy:
        channels = [f"{k}.{i}.100ms" for k in ("book", "ticker") for i in ("BTC-PERPETUAL", "ETH-PERPETUAL")]
        await _call(stalled, 1, "public/subscribe", channels=channels)
        await until(lambda: sim.slow_disconnects >= 1 and sim.clients == 1, "the stalled client to be disconnected")
        await _call(healthy, 1, "public/subscribe", channels=[BTC_BOOK])  # the market goes on for everyone else
        msg = await recv_json(healthy)
        assert msg["params"]["channel"] == BTC_BOOK and msg["params"]["data"]["type"] == "snapshot"


# -- lifecycle -------------------------------------------------------------------------------------


async def test_close_disconnects_clients_with_going_away() -> None:
    async def subscribed(ws: ClientConnection) -> None:
        assert (await _call(ws, 1, "public/subscribe", channels=[BTC_BOOK]))["result"] == [BTC_BOOK]

    sim = DeribitSimulator(FIXTURE, port=0, speed=1.0)
    await assert_close_says_going_away(sim, lambda s: s.ws_url(), subscribed)


async def test_run_simulator_serves_until_cancelled() -> None:
    async def test_call(sim: DeribitSimulator) -> None:
        assert sim.bound_port != 9783  # port 0 asked for a free port
        async with ws_client(sim.ws_url()) as ws:
            assert (await _call(ws, 7, "public/test"))["result"]["version"]

    await assert_serves_until_cancelled(run_simulator, FIXTURE, test_call)
