"""The Bybit simulator over real loopback sockets: REST, subscriptions, pacing, looping and injected faults."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.sim_helpers import (
    assert_close_says_going_away,
    assert_serves_until_cancelled,
    recv,
    recv_json,
    running_sim,
    until,
    ws_client,
)
from websockets.asyncio.client import ClientConnection

from flowgauge.recording import Connect, Recv, iter_records
from flowgauge.simulate.bybit import BybitSimulator, run_simulator

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bybit" / "bybit-linear-2026-08.jsonl.zst"
BTC_BOOK = "orderbook.200.BTCUSDT"


async def _topic_frames(ws: ClientConnection, topic: str) -> AsyncIterator[dict[str, Any]]:
    """Frames of one topic, in order; acks and other topics are skipped."""
    while True:
        msg = await recv_json(ws)
        if msg.get("topic") == topic:
            yield msg


async def _subscribe(ws: ClientConnection, *topics: str, req_id: str = "r1") -> dict[str, Any]:
    await ws.send(json.dumps({"op": "subscribe", "args": list(topics), "req_id": req_id}))
    while True:  # frames of topics subscribed earlier may precede the ack
        msg = await recv_json(ws)
        if msg.get("op") == "subscribe":
            return msg


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[BybitSimulator]:
    async with running_sim(BybitSimulator, FIXTURE, request) as simulator:
        yield simulator


# -- REST ------------------------------------------------------------------------------------------


async def test_rest_instruments_info_and_time(sim: BybitSimulator) -> None:
    async with aiohttp.ClientSession(sim.http_url) as http:
        async with http.get("/v5/market/instruments-info", params={"category": "linear", "limit": "1000"}) as r:
            linear = await r.json()
        assert r.status == 200 and linear["retCode"] == 0
        assert sorted(i["symbol"] for i in linear["result"]["list"]) == ["BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT"]
        assert linear["result"]["category"] == "linear" and linear["result"]["nextPageCursor"] == ""
        btc = next(i for i in linear["result"]["list"] if i["symbol"] == "BTCUSDT")
        assert btc["priceFilter"]["tickSize"] == "0.10" and btc["contractType"] == "LinearPerpetual"

        async with http.get("/v5/market/instruments-info?category=linear&symbol=ETHUSDT") as r:
            assert [i["symbol"] for i in (await r.json())["result"]["list"]] == ["ETHUSDT"]
        async with http.get("/v5/market/instruments-info?category=spot") as r:
            assert sorted(i["symbol"] for i in (await r.json())["result"]["list"]) == ["BTCUSDT", "ETHUSDT"]
        async with http.get("/v5/market/instruments-info?category=inverse") as r:
            inverse = await r.json()
        assert inverse["retCode"] == 0 and inverse["result"] == {
            "category": "inverse",
            "list": [],
            "nextPageCursor": "",
        }
        async with http.get("/v5/market/instruments-info?category=nonsense") as r:
            assert (await r.json())["retCode"] != 0

        async with http.get("/v5/market/time") as r:
            now = await r.json()
        assert now["retCode"] == 0 and abs(int(now["result"]["timeSecond"]) - time.time()) < 5
        assert int(now["result"]["timeNano"]) // 1_000_000_000 == int(now["result"]["timeSecond"])

        async with http.get("/v5/market/does-not-exist") as r:
            assert r.status == 404 and r.content_type == "application/json"
            assert (await r.json())["retCode"] != 0


# -- websocket protocol ----------------------------------------------------------------------------


async def test_subscribe_acks_then_snapshot_first_then_consecutive_deltas(sim: BybitSimulator) -> None:
    async with ws_client(sim.ws_url("linear")) as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": [BTC_BOOK], "req_id": "sub-1"}))
        ack = await recv_json(ws)
        assert ack["success"] is True and ack["op"] == "subscribe" and ack["req_id"] == "sub-1"
        assert ack["ret_msg"] == "" and ack["conn_id"]
        first = await recv_json(ws)
        assert first["topic"] == BTC_BOOK and first["type"] == "snapshot"
        assert len(first["data"]["b"]) == 200 and len(first["data"]["a"]) == 200
        # Exchange time is shifted to "now" (the recording is from 2026-08).
        assert abs(first["ts"] - time.time() * 1000) < 10_000
        prev = first["data"]["u"]
        n = 0
        async for msg in _topic_frames(ws, BTC_BOOK):
            assert msg["type"] == "delta" and msg["data"]["u"] == prev + 1
            prev = msg["data"]["u"]
            n += 1
            if n == 100:
                break


async def test_only_subscribed_topics_are_received(sim: BybitSimulator) -> None:
    async with ws_client(sim.ws_url("linear")) as ws:
        await _subscribe(ws, "publicTrade.BTCUSDT", "tickers.BTCUSDT")
        topics = {(await recv_json(ws))["topic"] for _ in range(60)}
        assert topics == {"publicTrade.BTCUSDT", "tickers.BTCUSDT"}


async def test_ping_pong_errors_and_duplicate_subscription(sim: BybitSimulator) -> None:
    async with ws_client(sim.ws_url("linear")) as ws:
        await ws.send(json.dumps({"op": "ping", "req_id": "p1"}))
        pong = await recv_json(ws)
        assert pong == {"success": True, "ret_msg": "pong", "conn_id": pong["conn_id"], "req_id": "p1", "op": "ping"}

        await ws.send("this is not json")
        err = await recv_json(ws)
        assert err["success"] is False and err["conn_id"] == pong["conn_id"]

        await ws.send(json.dumps({"op": "fly", "req_id": "x"}))
        assert (await recv_json(ws))["success"] is False

        # A topic the recording never has data for is still acked, like the venue does.
        assert (await _subscribe(ws, "orderbook.50.XRPUSDT"))["success"] is True
        again = await _subscribe(ws, "orderbook.50.XRPUSDT", req_id="r2")
        assert again["success"] is False and "already subscribed" in again["ret_msg"]
    assert sim.bad_requests == 3


# A small client queue keeps the speed-0 market close behind the reader, so the resubscription lands
# mid-recording rather than just before a loop's own snapshot.
@pytest.mark.parametrize("sim", [{"client_queue": 16}], indirect=True)
async def test_unsubscribe_then_subscribe_yields_a_fresh_snapshot(sim: BybitSimulator) -> None:
    async with ws_client(sim.ws_url("linear")) as ws:
        await _subscribe(ws, BTC_BOOK)
        frames = _topic_frames(ws, BTC_BOOK)
        first = await anext(frames)
        assert first["type"] == "snapshot"
        last_u = first["data"]["u"]
        for _ in range(20):
            last_u = (await anext(frames))["data"]["u"]

        await ws.send(json.dumps({"op": "unsubscribe", "args": [BTC_BOOK], "req_id": "u1"}))
        while True:  # frames queued before the unsubscribe may still arrive before its ack
            msg = await recv_json(ws)
            if msg.get("op") == "unsubscribe":
                assert msg["success"] is True and msg["req_id"] == "u1"
                break
            last_u = msg["data"]["u"]

        await _subscribe(ws, BTC_BOOK, req_id="r2")
        fresh = await anext(_topic_frames(ws, BTC_BOOK))
        assert fresh["type"] == "snapshot" and fresh["data"]["u"] >= last_u
        assert len(fresh["data"]["b"]) > 0 and len(fresh["data"]["a"]) > 0
        nxt = await anext(_topic_frames(ws, BTC_BOOK))
        assert nxt["type"] == "delta" and nxt["data"]["u"] == fresh["data"]["u"] + 1


@pytest.mark.parametrize("sim", [{"client_queue": 16}], indirect=True)
async def test_late_subscriber_snapshot_equals_the_book_built_from_the_stream(sim: BybitSimulator) -> None:
    def apply(book: dict[str, dict[float, float]], msg: dict[str, Any]) -> None:
        if msg["type"] == "snapshot":
            book["b"].clear()
            book["a"].clear()
        for side in ("b", "a"):
            for price, size in msg["data"][side]:
                if float(size) == 0:
                    book[side].pop(float(price), None)
                else:
                    book[side][float(price)] = float(size)

    book: dict[str, dict[float, float]] = {"b": {}, "a": {}}
    async with ws_client(sim.ws_url("linear")) as early, ws_client(sim.ws_url("linear")) as late:
        await _subscribe(early, BTC_BOOK)
        early_frames = _topic_frames(early, BTC_BOOK)
        for _ in range(50):
            apply(book, await anext(early_frames))
        await _subscribe(late, BTC_BOOK)
        snap = await anext(_topic_frames(late, BTC_BOOK))
        assert snap["type"] == "snapshot"
        u = -1
        while u < snap["data"]["u"]:
            msg = await anext(early_frames)
            apply(book, msg)
            u = msg["data"]["u"]
        assert u == snap["data"]["u"]
        top = {
            "b": dict(sorted(book["b"].items(), reverse=True)[:200]),
            "a": dict(sorted(book["a"].items())[:200]),
        }
        assert top == {side: {float(p): float(s) for p, s in snap["data"][side]} for side in ("b", "a")}


async def test_spot_path_serves_spot_frames_with_spot_acks(sim: BybitSimulator) -> None:
    async with ws_client(sim.ws_url("spot")) as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": [BTC_BOOK]}))
        ack = await recv_json(ws)
        assert ack["success"] is True and ack["ret_msg"] == "subscribe" and "req_id" not in ack
        snap = await recv_json(ws)
        # Spot BTCUSDT prices are quoted without trailing zeros and ids differ from linear's.
        assert snap["type"] == "snapshot" and snap["data"]["u"] == 62505424
        assert snap["data"]["b"][0] == ["65140.4", "0.885797"]


# -- pacing, looping ------------------------------------------------------------------------------


def _linear_book_times() -> tuple[float, list[tuple[float, int]]]:
    """(first linear frame time, [(recorded time, u) of BTC book frames]) straight from the fixture."""
    records = list(iter_records(FIXTURE))
    linear = {r.conn for r in records if isinstance(r, Connect) and r.addr.endswith("/v5/public/linear")}
    frames = sorted((r for r in records if isinstance(r, Recv) and r.conn in linear), key=lambda r: r.ts)
    topical = [(r.ts, json.loads(r.data)) for r in frames if '"topic"' in r.data]
    book = [(ts, m["data"]["u"]) for ts, m in topical if m["topic"] == BTC_BOOK]
    return topical[0][0], book


@pytest.mark.parametrize("sim", [{"speed": 10.0}], indirect=True)
async def test_pacing_follows_recorded_gaps_divided_by_speed(sim: BybitSimulator) -> None:
    start_ts, book = _linear_book_times()
    target_ts, target_u = next((ts, u) for ts, u in book if ts - start_ts >= 3.0)
    async with ws_client(sim.ws_url("linear")) as ws:
        t0 = time.monotonic()
        await _subscribe(ws, BTC_BOOK)
        async for msg in _topic_frames(ws, BTC_BOOK):
            if msg["data"]["u"] == target_u:
                break
        elapsed = time.monotonic() - t0
    expected = (target_ts - start_ts) / 10.0
    assert expected - 0.05 <= elapsed < expected + 2.0


async def test_loop_restarts_with_a_snapshot_and_ids_keep_increasing(sim: BybitSimulator) -> None:
    async with ws_client(sim.ws_url("linear")) as ws:
        await _subscribe(ws, BTC_BOOK)
        frames = _topic_frames(ws, BTC_BOOK)
        first = await anext(frames)
        last = first
        async for msg in frames:
            if msg["type"] == "snapshot":
                second = msg
                break
            last = msg
        assert second["data"]["u"] > last["data"]["u"] and second["data"]["seq"] > last["data"]["seq"]
        assert second["ts"] >= last["ts"] and second["cts"] >= last["cts"]
        after = await anext(frames)
        assert after["type"] == "delta" and after["data"]["u"] == second["data"]["u"] + 1
        # The same book content replays: the loop's snapshot is the recording's first snapshot.
        assert second["data"]["b"] == first["data"]["b"]
    assert sim.loops_completed >= 1


# -- injected faults and bounds -------------------------------------------------------------------


@pytest.mark.parametrize("sim", [{"gap_every": 7}], indirect=True)
async def test_gap_injection_skips_deltas(sim: BybitSimulator) -> None:
    async with ws_client(sim.ws_url("linear")) as ws:
        await _subscribe(ws, BTC_BOOK)
        frames = _topic_frames(ws, BTC_BOOK)
        prev = (await anext(frames))["data"]["u"]
        jumps = 0
        for _ in range(40):
            u = (await anext(frames))["data"]["u"]
            assert u > prev
            jumps += u != prev + 1
            prev = u
    assert jumps >= 5 and sim.gaps_injected >= jumps


@pytest.mark.parametrize("sim", [{"garbage_every": 4}], indirect=True)
async def test_garbage_injection_sends_each_kind_of_malformed_frame(sim: BybitSimulator) -> None:
    seen: dict[str, int] = {"non_json": 0, "bad_types": 0, "truncated": 0}
    async with ws_client(sim.ws_url("linear")) as ws:
        await _subscribe(ws, BTC_BOOK)
        for _ in range(60):
            raw = await recv(ws)
            try:
                msg = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                seen["non_json" if isinstance(raw, bytes) else "truncated"] += 1
                continue
            if not isinstance(msg["data"]["u"], int):
                seen["bad_types"] += 1
                assert msg["topic"] == BTC_BOOK and not isinstance(msg["data"]["b"], list)
    assert all(seen.values()), seen
    assert sum(seen.values()) == 12 and sim.garbage_sent >= 12
    assert all(sim.garbage_by_kind[kind] >= n for kind, n in seen.items())


@pytest.mark.parametrize("sim", [{"client_queue": 8, "slow_client_timeout": 0.2}], indirect=True)
async def test_client_that_stops_reading_is_disconnected_not_buffered(sim: BybitSimulator) -> None:
    async with ws_client(sim.ws_url("linear"), max_queue=1) as stalled, ws_client(sim.ws_url("linear")) as healthy:
        await _subscribe(stalled, BTC_BOOK, "orderbook.200.ETHUSDT", "tickers.BTCUSDT", "tickers.ETHUSDT")
        await until(lambda: sim.slow_disconnects == 1, "the stalled client to be disconnected")
        await until(lambda: sim.clients == 1, "the stalled connection to be closed")
        # The market goes on for everyone else.
        await _subscribe(healthy, BTC_BOOK)
        assert (await anext(_topic_frames(healthy, BTC_BOOK)))["type"] == "snapshot"


# -- lifecycle -------------------------------------------------------------------------------------


async def test_close_disconnects_clients_with_going_away() -> None:
    async def subscribed(ws: ClientConnection) -> None:
        await _subscribe(ws, BTC_BOOK)
        assert (await anext(_topic_frames(ws, BTC_BOOK)))["type"] == "snapshot"

    sim = BybitSimulator(FIXTURE, port=0, speed=1.0)
    await assert_close_says_going_away(sim, lambda s: s.ws_url("linear"), subscribed)


async def test_run_simulator_serves_until_cancelled() -> None:
    async def ping(sim: BybitSimulator) -> None:
        async with ws_client(sim.ws_url("linear")) as ws:
            await ws.send(json.dumps({"op": "ping"}))
            assert (await recv_json(ws))["ret_msg"] == "pong"

    await assert_serves_until_cancelled(run_simulator, FIXTURE, ping)


async def test_account_ratio_endpoint_answers_the_daemons_poll() -> None:
    import aiohttp
    from tests.conftest import linear_instrument

    from flowgauge.connectors.bybit import BybitAdapter
    from flowgauge.simulate.bybit import BybitSimulator
    from flowgauge.types import LongShortRatio

    (poll,) = BybitAdapter().polls([linear_instrument()])
    async with (
        BybitSimulator(FIXTURE, port=0, speed=0) as sim,
        aiohttp.ClientSession() as http,
        http.get(sim.http_url + poll.path, params=poll.params) as response,
    ):
        body = await response.text()
    (ratio,) = BybitAdapter().parse_poll(poll, body, 1)
    assert isinstance(ratio, LongShortRatio)
    assert 1.0 <= ratio.ratio <= 1.5  # the synthetic series stays between 50% and 60% long
