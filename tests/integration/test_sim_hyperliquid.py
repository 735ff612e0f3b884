"""The Hyperliquid simulator over real loopback sockets, driven by the real parser through a websockets
client: `/info` REST (ccxt's market loading included), subscriptions, snapshots, keepalive, looping,
relabelled ETH, synthesised asset contexts, and the injected gaps and garbage."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.sim_helpers import assert_serves_until_cancelled, recv, recv_json, running_sim, until, ws_client
from websockets.asyncio.client import ClientConnection

from flowgauge.book.sync import BookSync
from flowgauge.connectors.hyperliquid import HyperliquidAdapter, HyperliquidParser, instrument_from_market
from flowgauge.connectors.markets import load_markets, select
from flowgauge.simulate.hyperliquid import DEFAULT_PORT, HyperliquidSimulator, run_simulator
from flowgauge.types import BadFrame, BookSnapshot, BookState, FundingRate, Instrument, OpenInterest, Trade

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE = FIXTURES / "hyperliquid" / "hyperliquid-btc-2025-01.jsonl.zst"
BTC, ETH = "BTC/USDC:USDC", "ETH/USDC:USDC"


def _sub(kind: str, coin: str, method: str = "subscribe", **extra: Any) -> str:
    return json.dumps({"method": method, "subscription": {"type": kind, "coin": coin, **extra}})


async def _info(sim: HyperliquidSimulator, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(sim.http_url + "/info", json=body) as r:
        text = await r.text()
        return r.status, (json.loads(text) if r.content_type == "application/json" else text)


async def _instruments(sim: HyperliquidSimulator) -> list[Instrument]:
    markets = await load_markets("hyperliquid", sim.http_url)
    return [instrument_from_market(m) for m in markets if m["symbol"] in (BTC, ETH)]


async def _connected_parser(sim: HyperliquidSimulator, ws: ClientConnection) -> HyperliquidParser:
    """The daemon's path: ccxt metadata from the simulator, the adapter's plan, the parser's subscriptions."""
    ((url, parser),) = HyperliquidAdapter().connections(await _instruments(sim), sim.ws_url, 20)
    assert url == sim.ws_url
    assert await recv(ws) == "Websocket connection established."
    for frame in parser.on_connected():
        await ws.send(frame)
    return parser


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[HyperliquidSimulator]:
    async with running_sim(HyperliquidSimulator, FIXTURE, request) as simulator:
        yield simulator


# -- REST ------------------------------------------------------------------------------------------


async def test_info_endpoints_and_ccxt_market_loading(sim: HyperliquidSimulator) -> None:
    status, meta = await _info(sim, {"type": "meta"})
    assert status == 200
    assert [(a["name"], a["szDecimals"]) for a in meta["universe"]] == [("BTC", 5), ("ETH", 4)]
    status, (meta2, ctxs) = await _info(sim, {"type": "metaAndAssetCtxs"})
    assert meta2 == meta and len(ctxs) == 2
    assert Decimal(ctxs[0]["markPx"]) > 90_000 and 2_000 < Decimal(ctxs[1]["markPx"]) < 5_000
    assert all(Decimal(c["openInterest"]) > 0 and Decimal(c["funding"]) != 0 for c in ctxs)
    assert (await _info(sim, {"type": "spotMeta"}))[1] == {"universe": [], "tokens": []}
    assert (await _info(sim, {"type": "perpDexs"}))[1] == [None]
    mids = (await _info(sim, {"type": "allMids"}))[1]
    assert set(mids) == {"BTC", "ETH"}
    book = (await _info(sim, {"type": "l2Book", "coin": "ETH"}))[1]
    assert book["coin"] == "ETH" and len(book["levels"][0]) == len(book["levels"][1]) == 20
    assert Decimal(book["levels"][0][0]["px"]) < Decimal(book["levels"][1][0]["px"])
    assert (await _info(sim, {"type": "l2Book", "coin": "NOPE"}))[1] is None
    assert (await _info(sim, {"type": "l2Book", "coin": "BTC", "nSigFigs": 2}))[0] == 422
    assert (await _info(sim, {"type": "nonsense"}))[0] == 422
    async with aiohttp.ClientSession() as http:
        async with http.get(sim.http_url + "/info") as r:
            assert r.status == 405
        async with http.post(sim.http_url + "/exchange", json={}) as r:
            assert r.status == 404
    # ccxt's own market loading (spotMeta + metaAndAssetCtxs) against the simulator.
    markets = await load_markets("hyperliquid", sim.http_url)
    btc, eth = select("hyperliquid", markets, [BTC, ETH])
    # ccxt's ids are asset indexes ("0", "1"); select() maps Hyperliquid markets to coins, as the wire uses.
    assert {m["id"] for m in markets if m["symbol"] in (BTC, ETH)} == {"0", "1"}
    assert (btc.venue_id, btc.tick_size, eth.venue_id, eth.tick_size) == ("BTC", 1.0, "ETH", 0.1)
    assert (btc, eth) == tuple(instrument_from_market(m) for m in markets if m["symbol"] in (BTC, ETH))


async def test_fallback_poll_is_answered_and_parsed(sim: HyperliquidSimulator) -> None:
    adapter = HyperliquidAdapter()
    (poll,) = adapter.polls(await _instruments(sim))
    async with aiohttp.ClientSession() as http:
        headers = {"Content-Type": "application/json"}
        async with http.request(poll.method, sim.http_url + poll.path, data=poll.body, headers=headers) as r:
            body = await r.text()
    events = adapter.parse_poll(poll, body, time.time_ns())
    assert {type(e) for e in events} == {OpenInterest, FundingRate}
    assert {e.symbol for e in events} == {BTC, ETH}


# -- websocket --------------------------------------------------------------------------------------


async def test_parser_gets_books_trades_and_contexts_and_books_stay_valid(sim: HyperliquidSimulator) -> None:
    syncs = {symbol: BookSync(HyperliquidAdapter.sequence_rule) for symbol in (BTC, ETH)}
    seen: dict[str, dict[type, int]] = {BTC: {}, ETH: {}}
    last_seq: dict[str, int] = {}
    async with ws_client(sim.ws_url) as ws:
        parser = await _connected_parser(sim, ws)
        acks = 0
        while min(seen[s].get(BookSnapshot, 0) for s in seen) < 60:
            raw = await recv(ws)
            acks += '"subscriptionResponse"' in str(raw)
            for event in parser.feed(raw, time.time_ns()):
                assert not isinstance(event, BadFrame | str), event
                counts = seen[event.symbol]
                counts[type(event)] = counts.get(type(event), 0) + 1
                if isinstance(event, BookSnapshot):
                    assert event.seq >= last_seq.get(event.symbol, 0)  # push times never go back
                    last_seq[event.symbol] = event.seq
                    result = syncs[event.symbol].on_snapshot(event)
                    assert result.applied
                    assert syncs[event.symbol].book.bids.levels() == sorted(event.bids, reverse=True)
        # Keepalive: the venue answers the client's ping.
        await ws.send(parser.ping_frame())
        while True:
            msg = json.loads(await recv(ws))
            if msg["channel"] == "pong":
                break
    assert acks == 6
    for symbol in (BTC, ETH):
        assert syncs[symbol].state is BookState.VALID and syncs[symbol].gaps == 0
        assert seen[symbol].get(Trade, 0) > 30  # the subscription batch, then live prints
        assert seen[symbol].get(OpenInterest, 0) >= 2 and seen[symbol].get(FundingRate, 0) >= 2
    # Relabelled ETH sits on its own tick grid at an ETH-like price.
    eth_bid = syncs[ETH].book.bids.best()
    assert eth_bid is not None and 2_000 < eth_bid[0] < 5_000
    assert all(abs(p * 10 - round(p * 10)) < 1e-6 for p, _ in syncs[ETH].book.bids.levels())
    assert sim.ctx_sent >= 4 and sim.loops_completed >= 1


async def test_subscription_errors_and_resubscribe_snapshot(sim: HyperliquidSimulator) -> None:
    async with ws_client(sim.ws_url) as ws:
        assert await recv(ws) == "Websocket connection established."

        async def reply() -> dict[str, Any]:
            while True:  # data frames of earlier subscriptions may come first
                msg = await recv_json(ws)
                if msg["channel"] in ("subscriptionResponse", "error", "pong"):
                    return msg

        await ws.send(_sub("l2Book", "BTC"))
        ack = await reply()
        assert ack["data"] == {"method": "subscribe", "subscription": {"type": "l2Book", "coin": "BTC"}}
        await ws.send(_sub("l2Book", "BTC"))
        assert (await reply())["data"].startswith("Already subscribed")
        aggregated = _sub("l2Book", "ETH", nSigFigs=3)
        for bad in (_sub("l2Book", "DOGE"), _sub("candle", "BTC"), aggregated, "{oops"):
            await ws.send(bad)
            assert (await reply())["channel"] == "error"
        await ws.send(_sub("trades", "BTC", method="unsubscribe"))
        assert (await reply())["data"].startswith("Already unsubscribed")
        # The parser's resync: unsubscribe then subscribe; the snapshot follows the ack at once.
        parser = HyperliquidParser((await _instruments(sim))[:1])
        unsub, resub = parser.resync(BTC)
        await ws.send(unsub)
        assert (await reply())["data"]["method"] == "unsubscribe"
        await ws.send(resub)
        assert (await reply())["data"]["method"] == "subscribe"
        msg = await recv_json(ws)
        assert msg["channel"] == "l2Book" and msg["data"]["coin"] == "BTC"
    assert sim.bad_requests == 6


@pytest.mark.parametrize("sim", [{"speed": 10.0}], indirect=True)
async def test_pacing_follows_recorded_gaps_divided_by_speed(sim: HyperliquidSimulator) -> None:
    async with ws_client(sim.ws_url) as ws:
        assert await recv(ws) == "Websocket connection established."
        await ws.send(_sub("l2Book", "BTC"))
        times: list[tuple[float, int]] = []
        while len(times) < 8:
            msg = await recv_json(ws)
            if msg["channel"] == "l2Book":
                times.append((time.monotonic(), msg["data"]["time"]))
    wall = times[-1][0] - times[1][0]
    exchange = (times[-1][1] - times[1][1]) / 1000
    assert exchange / 10 - 0.1 <= wall < exchange / 10 + 1.0
    # Times look live at speed 1 and keep the recorded spacing otherwise: within a day of now here.
    assert abs(times[-1][1] / 1000 - time.time()) < 86_400


async def test_loop_keeps_times_increasing_and_trades_new(sim: HyperliquidSimulator) -> None:
    instruments = [i for i in await _instruments(sim) if i.symbol == BTC]
    parser = HyperliquidParser(instruments)
    trade_ids: list[str] = []
    books = 0
    async with ws_client(sim.ws_url) as ws:
        await ws.send(_sub("l2Book", "BTC"))
        await ws.send(_sub("trades", "BTC"))
        while books < 2 * 46 + 5:  # past the end of the 46-push recording twice
            for event in parser.feed(await recv(ws), time.time_ns()):
                if isinstance(event, Trade):
                    trade_ids.append(event.trade_id)
                books += isinstance(event, BookSnapshot)
    assert sim.loops_completed >= 2
    assert parser.duplicate_trades == 0  # looped prints are later and carry new ids and hashes
    assert len(trade_ids) == len(set(trade_ids)) > 64


@pytest.mark.parametrize("sim", [{"gap_every": 3}], indirect=True)
async def test_gap_injection_drops_pushes_yet_every_push_is_whole(sim: HyperliquidSimulator) -> None:
    parser = HyperliquidParser([i for i in await _instruments(sim) if i.symbol == BTC])
    sync = BookSync(HyperliquidAdapter.sequence_rule)
    received = 0
    async with ws_client(sim.ws_url) as ws:
        await ws.send(_sub("l2Book", "BTC"))
        while received < 40:
            for event in parser.feed(await recv(ws), time.time_ns()):
                if isinstance(event, BookSnapshot):
                    received += 1
                    assert sync.on_snapshot(event).applied and len(event.bids) == 20
    # A third of the pushes never arrived (the snapshot included in the count), and no gap can be seen.
    assert sim.gaps_injected >= received // 2 - 1
    assert sync.gaps == 0 and sync.state is BookState.VALID


@pytest.mark.parametrize("sim", [{"garbage_every": 4}], indirect=True)
async def test_garbage_injection_reaches_the_parser_as_bad_frames(sim: HyperliquidSimulator) -> None:
    parser = HyperliquidParser([i for i in await _instruments(sim) if i.symbol == BTC])
    bad: list[BadFrame] = []
    async with ws_client(sim.ws_url) as ws:
        await ws.send(_sub("l2Book", "BTC"))
        while len(bad) < 6:
            bad += [e for e in parser.feed(await recv(ws), time.time_ns()) if isinstance(e, BadFrame)]
    touching = [b for b in bad if b.touches_book]
    assert touching and all(b.symbol == BTC for b in touching)  # the well-formed l2Book with bad types
    assert any(b.reason == "not JSON" for b in bad)  # the binary frame and the truncated copy
    assert sim.garbage_sent >= 6 and set(sim.garbage_by_kind) == {"non_json", "bad_types", "truncated"}


@pytest.mark.parametrize("sim", [{"client_queue": 8, "slow_client_timeout": 0.2}], indirect=True)
async def test_client_that_stops_reading_is_disconnected(sim: HyperliquidSimulator) -> None:
    async with ws_client(sim.ws_url, max_queue=1) as stalled, ws_client(sim.ws_url) as healthy:
        for kind in ("l2Book", "trades", "activeAssetCtx"):
            await stalled.send(_sub(kind, "BTC"))
            await stalled.send(_sub(kind, "ETH"))
        await until(lambda: sim.slow_disconnects == 1, "the stalled client to be disconnected")
        await until(lambda: sim.clients == 1, "the stalled connection to be closed")
        # The market goes on for everyone else: the healthy client still gets its book.
        await healthy.send(_sub("l2Book", "BTC"))
        channels = []
        while "l2Book" not in channels:
            raw = await recv(healthy)
            channels.append(json.loads(raw)["channel"] if raw.startswith("{") else raw)
        assert channels[-2:] == ["subscriptionResponse", "l2Book"]


async def test_run_simulator_serves_until_cancelled() -> None:
    async def ping(sim: HyperliquidSimulator) -> None:
        async with ws_client(sim.ws_url) as ws:
            assert await recv(ws) == "Websocket connection established."
            await ws.send('{"method":"ping"}')
            assert await recv_json(ws) == {"channel": "pong"}

    assert DEFAULT_PORT == 9784
    await assert_serves_until_cancelled(run_simulator, FIXTURE, ping)
