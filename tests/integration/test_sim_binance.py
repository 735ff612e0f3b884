"""The Binance USD-M simulator over real loopback sockets, driven by our own parser, adapter and book sync.

A `Driver` plays the daemon's part for one connection: it sends what the parser asks on connect, performs the
REST snapshots it requests, feeds every frame through the parser and each book through `BookSync` with the
venue's rule, and resyncs (a fresh REST snapshot) when the book says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import aiohttp
import pytest
from tests.sim_helpers import STEP_S, recv, recv_json, running_sim, until, ws_client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from flowgauge.book.sync import BookSync
from flowgauge.connectors.base import FetchSnapshot
from flowgauge.connectors.binance import BinanceUsdmAdapter, BinanceUsdmParser
from flowgauge.connectors.markets import point_ccxt_at
from flowgauge.simulate.binanceusdm import BinanceUsdmSimulator
from flowgauge.types import (
    SELL,
    BadFrame,
    BookDelta,
    BookSnapshot,
    BookState,
    ContractKind,
    Event,
    FundingRate,
    Instrument,
    InvalidReason,
    Liquidation,
    LongShortRatio,
    OpenInterest,
    Trade,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "binanceusdm"
REC_2024 = FIXTURES / "binance-usdm-ethusdt-2024-08.jsonl.zst"  # ETHUSDT recorded; BTCUSDT relabelled from it
REC_2021 = FIXTURES / "binance-usdm-2021-07.jsonl.zst"  # SUSHIUSDT, AKROUSDT; both BTC and ETH relabelled


def usdm(symbol: str, venue_id: str, tick: float) -> Instrument:
    base, rest = symbol.split("/")
    quote, settle = rest.split(":")
    return Instrument("binanceusdm", symbol, venue_id, "linear", ContractKind.LINEAR, 1.0, tick, base, quote, settle,
                      True)  # fmt: skip


BTC = usdm("BTC/USDT:USDT", "BTCUSDT", 0.1)
ETH = usdm("ETH/USDT:USDT", "ETHUSDT", 0.01)


def _client(url: str) -> contextlib.AbstractAsyncContextManager[ClientConnection]:
    return ws_client(url, max_size=1 << 24)  # room for the largest frames whatever the stream


class Driver:
    """One connection's parser, books and REST snapshots, as the daemon runs them."""

    def __init__(self, parser: BinanceUsdmParser, ws: ClientConnection, http: aiohttp.ClientSession) -> None:
        self.parser = parser
        self.ws = ws
        self.http = http
        self.syncs = {i.symbol: BookSync(parser_rule(), buffer_deltas=True) for i in parser.instruments.values()}
        self.events: list[Event] = []
        self.bad: list[BadFrame] = []
        self.resyncs = 0
        self.deltas = 0
        self.applied = 0

    async def start(self) -> None:
        fetches = []
        for action in self.parser.on_connected():
            if isinstance(action, str):
                await self.ws.send(action)
            else:
                fetches.append(action)
        for fetch in fetches:
            await self.snapshot(fetch)

    async def snapshot(self, fetch: FetchSnapshot) -> None:
        async with self.http.get(fetch.path, params=fetch.params) as answer:
            body = await answer.text()
        for event in self.parser.on_snapshot(fetch.symbol, body, time.time_ns()):
            assert isinstance(event, BookSnapshot), event
            if self.syncs[event.symbol].on_snapshot(event).needs_resync:
                await self.resync(event.symbol)

    async def resync(self, symbol: str) -> None:
        self.resyncs += 1
        for action in self.parser.resync(symbol):
            assert isinstance(action, FetchSnapshot)
            await self.snapshot(action)

    async def step(self) -> list[Event]:
        raw = await recv(self.ws)
        events = [e for e in self.parser.feed(raw, time.time_ns()) if not isinstance(e, str)]
        for event in events:
            if isinstance(event, BookDelta):
                self.deltas += 1
                result = self.syncs[event.symbol].on_delta(event)
                self.applied += result.applied
                if result.needs_resync:
                    await self.resync(event.symbol)
            elif isinstance(event, BadFrame):
                self.bad.append(event)
                if event.touches_book and event.symbol is not None:
                    self.syncs[event.symbol].invalidate(event.invalid_reason or InvalidReason.BAD_FRAME, event.reason)
                    await self.resync(event.symbol)
            else:
                self.events.append(event)
        return events

    async def run(self, frames: int) -> None:
        for _ in range(frames):
            await self.step()

    async def run_until(self, done: Callable[[], bool], what: str, timeout_s: float = 6 * STEP_S) -> None:
        """Read frames until `done()` holds, with a deadline. How much a reader gets done in a given number of
        frames depends on how fast it reads (a loaded machine reads later, so its snapshots bridge later): a
        test that asserts an outcome waits for it rather than counting frames."""
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}: gaps={self.gaps()} resyncs={self.resyncs} applied={self.applied}"
                f" states={[s.state.value for s in self.syncs.values()]}"
            )
            await self.step()

    def gaps(self) -> int:
        return sum(s.gaps for s in self.syncs.values())


def parser_rule():  # the adapter's rule, as the engine gets it
    return BinanceUsdmAdapter.sequence_rule


@contextlib.asynccontextmanager
async def driver(
    sim: BinanceUsdmSimulator, instruments: Sequence[Instrument], route: str = "public"
) -> AsyncIterator[Driver]:
    adapter = BinanceUsdmAdapter(best_quote=False)  # the book protocol alone (best quotes: test_sim_best_quotes.py)
    connections = dict((p.route, (url, p)) for url, p in adapter.connections(instruments, sim.ws_base, 1000))
    url, parser = connections[route]
    async with aiohttp.ClientSession(sim.http_url) as http, _client(url) as ws:
        d = Driver(parser, ws, http)
        await d.start()
        yield d


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[BinanceUsdmSimulator]:
    async with running_sim(BinanceUsdmSimulator, REC_2024, request) as simulator:
        yield simulator


# -- REST ------------------------------------------------------------------------------------------------


async def test_ccxt_loads_markets_from_the_simulator(sim: BinanceUsdmSimulator) -> None:
    import ccxt.async_support as ccxt_async

    exchange = ccxt_async.binanceusdm({"options": {"fetchMarkets": {"types": ["linear"]}}})
    point_ccxt_at(exchange, sim.http_url)
    try:
        markets = await exchange.load_markets()
    finally:
        await exchange.close()
    btc = markets["BTC/USDT:USDT"]
    assert (btc["id"], btc["linear"], btc["contractSize"], btc["precision"]["price"]) == ("BTCUSDT", True, 1.0, 0.1)
    assert markets["ETH/USDT:USDT"]["precision"]["price"] == 0.01


async def test_rest_depth_open_interest_ratios_funding_info(sim: BinanceUsdmSimulator) -> None:
    adapter = BinanceUsdmAdapter()
    polls = {p.key: p for p in adapter.polls([BTC, ETH])}
    async with aiohttp.ClientSession(sim.http_url) as http:
        async with http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": "5"}) as r:
            depth = await r.json()
            used = int(r.headers["X-MBX-USED-WEIGHT-1M"])
        assert r.status == 200 and len(depth["bids"]) == len(depth["asks"]) == 5
        assert float(depth["bids"][0][0]) < float(depth["asks"][0][0])
        assert 40_000 < float(depth["bids"][0][0]) < 80_000  # ETH's book relabelled to a BTC-like price
        assert all(round(float(p) * 10) == float(p) * 10 for p, _ in depth["bids"])  # on BTC's 0.1 tick
        async with http.get("/fapi/v1/depth", params={"symbol": "ETHUSDT", "limit": "1000"}) as r:
            assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) == used + 20  # Binance's weight for limit 1000
            assert len((await r.json())["bids"]) > 500
        for params, code in (
            ({"symbol": "BTCUSDT", "limit": "7"}, -1130), ({"limit": "5"}, -1102), ({"symbol": "XRPUSDT"}, -1121),
        ):  # fmt: skip
            async with http.get("/fapi/v1/depth", params=params) as r:
                assert r.status == 400 and (await r.json())["code"] == code

        events = []
        for key in ("oi:BTCUSDT", "ls_accounts:ETHUSDT", "ls_top_positions:ETHUSDT"):
            poll = polls[key]
            async with http.get(poll.path, params=poll.params) as r:
                events += adapter.parse_poll(poll, await r.text(), time.time_ns())
        oi, accounts, positions = events
        assert isinstance(oi, OpenInterest) and oi.open_interest > 0
        assert isinstance(accounts, LongShortRatio) and accounts.kind == "accounts" and accounts.ratio > 0
        assert isinstance(positions, LongShortRatio) and positions.kind == "top_positions"
        assert accounts.ts_exchange % (300 * 10**9) == 0  # 5-minute buckets

        ratio = {"symbol": "BTCUSDT", "period": "5m"}
        async with http.get("/futures/data/globalLongShortAccountRatio", params=ratio) as r:
            rows = await r.json()
        assert len(rows) == 30 and rows[1]["timestamp"] - rows[0]["timestamp"] == 300_000

        async with http.get("/fapi/v1/time") as r:
            assert abs((await r.json())["serverTime"] - time.time() * 1000) < 5000
        async with http.get("/fapi/v2/nothing") as r:
            assert r.status == 404


@pytest.mark.parametrize("sim", [{"funding_intervals": {"BTCUSDT": 4}}], indirect=True)
async def test_funding_info_and_mark_price_stream(sim: BinanceUsdmSimulator) -> None:
    """fundingInfo (polled) sets BTC's interval to 4 h; the /market parser then stamps marks with it."""
    adapter = BinanceUsdmAdapter()
    (poll,) = [p for p in adapter.polls([BTC, ETH]) if p.kind == "funding_info"]
    connections = adapter.connections([BTC, ETH], sim.ws_base, 1000)
    url, parser = connections[1]
    assert url.endswith("/market/stream")
    async with aiohttp.ClientSession(sim.http_url) as http, _client(url) as ws:
        async with http.get(poll.path) as r:
            intervals = adapter.parse_poll(poll, await r.text(), time.time_ns())
        assert {(e.symbol, e.interval_hours) for e in intervals if isinstance(e, FundingRate)} == {
            ("BTC/USDT:USDT", 4.0), ("ETH/USDT:USDT", 8.0),
        }  # fmt: skip
        d = Driver(parser, ws, http)
        await d.start()
        marks: dict[str, FundingRate] = {}
        while len(marks) < 2:
            for event in await d.step():
                if isinstance(event, FundingRate):
                    marks[event.symbol] = event
        assert marks["BTC/USDT:USDT"].interval_hours == 4.0 and marks["ETH/USDT:USDT"].interval_hours == 8.0
        btc = marks["BTC/USDT:USDT"]
        assert btc.rate == pytest.approx(0.0001) and btc.mark_price is not None and btc.index_price is not None
        assert btc.next_funding_ts is not None and btc.next_funding_ts % (4 * 3600 * 10**9) == 0
        assert 40_000 < btc.mark_price < 80_000


@pytest.mark.parametrize("sim", [{"rest_weight_limit": 45}], indirect=True)
async def test_rest_weight_limit_answers_429(sim: BinanceUsdmSimulator) -> None:
    async with aiohttp.ClientSession(sim.http_url) as http:
        statuses = []
        for _ in range(3):
            async with http.get("/fapi/v1/depth", params={"symbol": "ETHUSDT", "limit": "1000"}) as r:
                statuses.append(r.status)
                body = await r.json()
        assert statuses == [200, 200, 429]
        assert body["code"] == -1003 and int(r.headers["Retry-After"]) >= 1
    assert sim.rate_limited == 1


async def test_legacy_unrouted_paths_are_retired(sim: BinanceUsdmSimulator) -> None:
    for path in ("/stream", "/ws", "/ws/btcusdt@depth"):
        with pytest.raises(InvalidStatus) as info:
            async with connect(sim.ws_base + path):
                pass
        assert info.value.response.status_code == 404


# -- books -----------------------------------------------------------------------------------------------


# A small client queue keeps the speed-0 simulator close behind the reader, so the REST snapshot (the
# simulator's book now) is only a few diffs ahead of the frames being read and most diffs get applied.
SMALL_QUEUE = {"client_queue": 64}


@pytest.mark.parametrize("sim", [SMALL_QUEUE], indirect=True)
async def test_books_sync_from_rest_and_stay_valid_across_loops(sim: BinanceUsdmSimulator) -> None:
    """One loop of the 20 s excerpt is ~770 diffs for the two books: 1800 frames cross two loop restarts."""
    async with driver(sim, [BTC, ETH]) as d:
        await d.run(1800)
        assert sim.loops_completed >= 2
        assert d.resyncs == 0 and d.gaps() == 0 and not d.bad
        assert all(s.state is BookState.VALID for s in d.syncs.values())
        assert d.deltas == 1800 - 1  # every frame but the SUBSCRIBE ack
        assert d.applied > 1600  # only the few diffs older than the snapshots were dropped
        btc, eth = d.syncs[BTC.symbol].book, d.syncs[ETH.symbol].book
        assert 40_000 < btc.bids.best()[0] < 80_000 and 2_000 < eth.bids.best()[0] < 4_000


@pytest.mark.parametrize("sim", [{"loop": False}], indirect=True)
async def test_book_equals_the_simulators_rest_book_at_the_end(sim: BinanceUsdmSimulator) -> None:
    async with driver(sim, [BTC, ETH]) as d:
        await until(lambda: sim.loops_completed == 1, "the recording to finish")
        async with d.http.get("/fapi/v1/depth", params={"symbol": "ETHUSDT", "limit": "1000"}) as r:
            final = await r.json()
        sync = d.syncs[ETH.symbol]
        while sync.book.seq != final["lastUpdateId"]:
            await d.step()
        assert d.gaps() == 0
        assert sync.book.bids.top(1000) == [(float(p), float(q)) for p, q in final["bids"]]
        assert sync.book.asks.top(1000) == [(float(p), float(q)) for p, q in final["asks"]]


# Paced (20x the recorded rate, ~770 frames/s) so the reader keeps up: its REST snapshots are then taken just
# ahead of the frame it reads, bridge at once, and most diffs between two injected gaps are applied.
@pytest.mark.parametrize("sim", [{"gap_every": 40, "speed": 20.0}], indirect=True)
async def test_injected_gaps_are_detected_and_resynced(sim: BinanceUsdmSimulator) -> None:
    async with driver(sim, [BTC, ETH]) as d:
        # Several gaps, each answered with a REST snapshot that bridged (the books are valid again), and diffs
        # applied between them. How many diffs a reader applies in a given number of frames depends on how far
        # behind it reads (snapshots bridge later on a loaded machine), so the test waits for the outcome.
        def recovered() -> bool:
            valid = all(s.state is BookState.VALID for s in d.syncs.values())
            return valid and d.gaps() >= 4 and d.applied > 150

        await d.run_until(recovered, "4 gaps resynced, books VALID, 150 diffs applied")
        assert sim.gaps_injected > 0
        assert d.resyncs >= d.gaps() and not d.bad


@pytest.mark.parametrize("sim", [{"garbage_every": 10, **SMALL_QUEUE}], indirect=True)
async def test_injected_garbage_becomes_bad_frames(sim: BinanceUsdmSimulator) -> None:
    async with driver(sim, [BTC, ETH]) as d:
        await d.run(200)
        assert set(sim.garbage_by_kind) == {"non_json", "bad_types", "truncated"}
        assert len(d.bad) == (200 - 1) // 11  # after the ack: 10 data frames, then one garbage frame
        touching = [b for b in d.bad if b.touches_book]
        assert touching and {b.symbol for b in touching} <= {BTC.symbol, ETH.symbol}  # named by the stream
        assert any(b.reason == "not JSON" for b in d.bad)
        assert d.resyncs == len(touching) and d.gaps() == 0


async def test_2021_recording_serves_relabelled_btc_and_eth() -> None:
    sushi = usdm("SUSHI/USDT:USDT", "SUSHIUSDT", 0.001)
    async with BinanceUsdmSimulator(REC_2021, port=0, speed=0.0, **SMALL_QUEUE) as sim:
        assert set(sim.symbols) == {"BTCUSDT", "ETHUSDT", "SUSHIUSDT", "AKROUSDT"}
        async with driver(sim, [usdm("BTC/USDT:USDT", "BTCUSDT", 0.01), ETH, sushi]) as d:
            await d.run(600)
            assert d.gaps() == 0 and d.resyncs == 0 and d.applied > 300
            books = {s: sync.book for s, sync in d.syncs.items()}
            assert 40_000 < books["BTC/USDT:USDT"].bids.best()[0] < 80_000
            assert 2_000 < books[ETH.symbol].bids.best()[0] < 4_000
            assert 5 < books[sushi.symbol].bids.best()[0] < 10  # recorded as itself


# -- trades, liquidations, routing -----------------------------------------------------------------------


@pytest.mark.parametrize("sim", [{"liquidation_every": 4}], indirect=True)
async def test_market_route_trades_and_liquidations(sim: BinanceUsdmSimulator) -> None:
    async with driver(sim, [BTC, ETH], route="market") as d:
        await d.run(300)
    trades = [e for e in d.events if isinstance(e, Trade)]
    liquidations = [e for e in d.events if isinstance(e, Liquidation)]
    assert {t.symbol for t in trades} == {BTC.symbol, ETH.symbol}
    assert all(t.size > 0 and not t.forced for t in trades) and {t.side for t in trades} == {1, -1}
    assert liquidations and not d.bad and not any(isinstance(e, BookDelta) for e in d.events)
    # The simulator turns every 4th trade into a liquidation order of the taker's side: a forced SELL means a
    # long was liquidated.
    by_fill = {(t.symbol, t.price, t.size, t.ts_exchange): t.side for t in trades}
    for liq in liquidations:
        side = by_fill[(liq.symbol, liq.price, liq.size, liq.ts_exchange)]
        assert liq.liquidated_side == ("long" if side == SELL else "short")


async def test_a_stream_on_the_wrong_route_is_silently_never_delivered(sim: BinanceUsdmSimulator) -> None:
    wrong = {"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s", "btcusdt@depth@100ms"], "id": 1}
    right = {"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s"], "id": 1}
    async with _client(sim.ws_url("public")) as public, _client(sim.ws_url("market")) as market:
        await public.send(json.dumps(wrong))
        await market.send(json.dumps(right))
        assert await recv_json(public) == {"result": None, "id": 1}
        assert await recv_json(market) == {"result": None, "id": 1}
        seen = {(await recv_json(public))["stream"] for _ in range(400)}  # ~10 s of recorded time
        assert seen == {"btcusdt@depth@100ms"}
        marks = [(await recv_json(market))["stream"] for _ in range(5)]
        assert marks == ["btcusdt@markPrice@1s"] * 5
        await public.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        while (reply := await recv_json(public)).get("id") != 2:
            pass
        assert reply["result"] == ["btcusdt@depth@100ms", "btcusdt@markPrice@1s"]  # accepted, never delivered


async def test_subscription_errors_and_raw_mode(sim: BinanceUsdmSimulator) -> None:
    parser = BinanceUsdmParser([ETH], route="public")
    async with _client(sim.ws_url("public")) as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["not a stream"], "id": 1}))
        await ws.send(json.dumps({"method": "FLY", "params": [], "id": 2}))
        await ws.send("not json")
        for _ in range(3):
            (event,) = parser.feed(await ws.recv(), 1)
            assert isinstance(event, BadFrame) and event.reason.startswith("request rejected")
    assert sim.bad_requests == 3
    # `/ws/<stream>` subscribes in the URL and sends bare payloads; the parser reads them the same way.
    async with _client(f"{sim.ws_base}/public/ws/ethusdt@depth@100ms") as ws:
        first = json.loads(await ws.recv())
        assert first["e"] == "depthUpdate" and "stream" not in first
        assert abs(first["E"] - time.time() * 1000) < 10_000  # 2024 times shifted to look live
        (delta,) = parser.feed(json.dumps(first), 1)
        assert isinstance(delta, BookDelta) and delta.symbol == ETH.symbol


# -- keepalive, connection limits ------------------------------------------------------------------------


@pytest.mark.parametrize("sim", [{"ping_interval_s": 0.05}], indirect=True)
async def test_server_pings_are_answered_by_the_client_library(sim: BinanceUsdmSimulator) -> None:
    assert BinanceUsdmParser([BTC]).ping_frame() is None  # nothing to send at the application level
    async with _client(sim.ws_url("public")) as ws:
        await until(lambda: sim.pongs_received >= 3, "three pongs")
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 7}))
        assert await recv_json(ws) == {"result": [], "id": 7}  # still connected
    assert sim.pings_sent >= 3 and sim.pong_disconnects == 0


@pytest.mark.parametrize("sim", [{"ping_interval_s": 0.05, "pong_timeout_s": 0.2}], indirect=True)
async def test_a_client_that_never_pongs_is_dropped(sim: BinanceUsdmSimulator) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(sim.ws_url("public"), autoping=False) as ws:
        async with asyncio.timeout(STEP_S):
            while (msg := await ws.receive()).type is aiohttp.WSMsgType.PING:
                pass
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert sim.pong_disconnects == 1


@pytest.mark.parametrize("sim", [{"max_connection_age_s": 0.3}], indirect=True)
async def test_connections_are_cut_at_their_maximum_age(sim: BinanceUsdmSimulator) -> None:
    async with connect(sim.ws_url("market")) as ws:
        async with asyncio.timeout(STEP_S):
            await ws.wait_closed()
        assert ws.close_code == 1000
    assert sim.age_disconnects == 1
    assert BinanceUsdmAdapter.max_connection_age_s < 24 * 3600  # the daemon reconnects before Binance cuts


async def test_more_than_ten_messages_a_second_disconnects(sim: BinanceUsdmSimulator) -> None:
    async with connect(sim.ws_url("public")) as ws:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(STEP_S):
                for n in range(25):  # however the burst straddles a second, one second sees more than 10
                    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": n}))
                while True:
                    await ws.recv()
    assert sim.rate_disconnects == 1
