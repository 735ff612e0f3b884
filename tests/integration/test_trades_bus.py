"""Trades and liquidations on the bus (issue 9 item 8) from a real daemon fed by the five venue simulators.

`flowgauge simulate --venue all` and `flowgauge run` as real processes, real websocket subscribers:
* `publish.trades: true`: a subscriber to `flowgauge.v1.trades.>` receives trade records from several venues,
  each valid against trade.v1.json, with a positive size, a valid side and a non-empty trade id unique per
  venue and symbol; the OKX simulator's liquidations arrive as `"kind": "liquidation"` records. A subscriber to
  the book pattern `flowgauge.v1.*.*` never gets a trade (4 tokens against 5) and sees which liquidation each
  liquidation payload reports. A late subscriber gets current values but never a trade as one.
* `publish.trades` unset: one subscriber to both patterns sees liquidation payloads and, right after each, the
  next message of the stream, never a trade record (on one connection messages keep their publication order,
  and the engine publishes a liquidation's record right after its payload).

And the Redis publisher against a real redis-server: trades are PUBLISHed, but get no last-value key.
"""

from __future__ import annotations

import asyncio
import json
import signal
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import redis.asyncio
import tests.integration.test_all_venues as all_venues
import yaml
from tests.brokers import redis_server
from tests.procs import TIMEOUT_FACTOR, flowgauge, free_port, wait_for
from websockets.asyncio.client import ClientConnection, connect

from flowgauge.engine import LIQUIDATION_KEYS
from flowgauge.publish import topics
from flowgauge.publish.redis import RedisPublisher

pytestmark = pytest.mark.integration

TRADE_SCHEMA = json.loads((resources.files("flowgauge") / "schema" / "trade.v1.json").read_text())


def daemon_config(
    tmp_path: Path, base: int, bus_port: int, http_port: int, publish: dict[str, Any],
    only: tuple[str, ...] = all_venues.VENUES,
) -> Path:
    """The five simulated venues (or `only` some), simulator ports from `base` in the order of VENUES."""
    venues = {}
    for offset, venue in enumerate(all_venues.VENUES):
        if venue not in only:
            continue
        port = base + offset
        venues[venue] = {
            "symbols": all_venues.SYMBOLS[venue],
            "ws_url": f"ws://127.0.0.1:{port}{all_venues.WS_PATHS[venue]}",
            "rest_url": f"http://127.0.0.1:{port}",
            "stale_after_s": 15,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 1.0,
        }
    config = tmp_path / f"daemon-{bus_port}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "venues": venues,
                "bus": {"embedded": {"host": "127.0.0.1", "port": bus_port}},
                "http": {"host": "127.0.0.1", "port": http_port},
                "publish": publish,
            }
        )
    )
    return config


async def subscriber(bus_port: int, *patterns: str) -> ClientConnection:
    async def attempt() -> ClientConnection:
        ws = await connect(f"ws://127.0.0.1:{bus_port}", open_timeout=2)
        await ws.send(orjson.dumps({"op": "subscribe", "patterns": list(patterns)}).decode())
        assert orjson.loads(await ws.recv())["op"] == "subscribed"
        return ws

    return await wait_for(attempt, f"a bus subscription to {patterns}")  # type: ignore[no-any-return]


def check_liquidation_payload(payload: dict[str, Any]) -> None:
    assert payload["liq_side"] in ("long", "short")
    assert payload["liq_price"] > 0 and payload["liq_size"] > 0
    assert payload["liq_notional"] == payload["liq_price"] * payload["liq_size"]


async def test_trades_and_liquidations_reach_subscribers_of_the_trades_topics(tmp_path: Path) -> None:
    base = all_venues.five_free_ports()
    bus_port, http_port = free_port(), free_port()
    config = daemon_config(tmp_path, base, bus_port, http_port, {"trades": True})
    sim_args = ["simulate", "--venue", "all", "--base-port", str(base), "--speed", "4"]
    with (
        flowgauge(sim_args, tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon,
    ):
        trades_ws = await subscriber(bus_port, "flowgauge.v1.trades.>")
        books_ws = await subscriber(bus_port, "flowgauge.v1.*.*")
        # The book pattern, read all along (a subscriber that stopped reading would be dropped as slow): book,
        # OI, funding and liquidation payloads, never a trade.
        book_topics: set[str] = set()
        liquidation_payloads: list[dict[str, Any]] = []

        async def read_book_pattern() -> None:
            async for raw in books_ws:
                message = orjson.loads(raw)
                assert not topics.is_trades_topic(message["topic"]) and len(message["topic"].split(".")) == 4
                if message["topic"].startswith(f"{topics.PREFIX}.agg."):
                    continue  # a cross-venue aggregate (flowgauge.v1.agg.<BASE>) also matches flowgauge.v1.*.*
                book_topics.add(message["topic"])
                payload = message["payload"]
                if payload["trigger"] == "liquidation":
                    check_liquidation_payload(payload)
                    liquidation_payloads.append(payload)
                else:
                    assert [payload[key] for key in LIQUIDATION_KEYS] == [None] * 4

        book_reader = asyncio.create_task(read_book_pattern())
        ids: dict[tuple[str, str], set[str]] = {}
        liquidation_records: list[dict[str, Any]] = []

        async def trades_from_several_venues_and_a_liquidation() -> bool:
            message = orjson.loads(await trades_ws.recv())
            topic, record = message["topic"], message["payload"]
            assert "snapshot" not in message  # trades are never a current value
            jsonschema.validate(record, TRADE_SCHEMA)
            assert topic == topics.trades_topic(record["venue"], record["symbol"])
            assert record["size"] > 0 and record["price"] > 0
            if record["kind"] == "trade":
                assert record["side"] in ("buy", "sell") and record["trade_id"]
                seen = ids.setdefault((record["venue"], record["symbol"]), set())
                assert record["trade_id"] not in seen, f"trade published twice: {record}"
                seen.add(record["trade_id"])
            else:
                assert record["liq_side"] in ("long", "short") and record["forced"] is True
                liquidation_records.append(record)
            return len({venue for venue, _ in ids}) >= 3 and bool(liquidation_records)

        try:
            await wait_for(trades_from_several_venues_and_a_liquidation, "trades of 3 venues and a liquidation",
                           timeout_s=90)
        except AssertionError as exc:
            log = (tmp_path / "daemon.log").read_text()[-3000:]
            seen = f"trades from {sorted(ids)}, {len(liquidation_records)} liquidations"
            raise AssertionError(f"{exc}; {seen}\n{log}") from None

        def liquidation_payload_seen() -> bool:
            if book_reader.done():
                book_reader.result()  # its assertion (or the connection's end) is the failure
                raise AssertionError("the book-pattern subscriber stopped")
            return bool(liquidation_payloads)

        await wait_for(liquidation_payload_seen, "a liquidation payload on the book pattern", timeout_s=60)
        assert len(book_topics) >= 2

        # A late joiner gets current values on subscribe (books, statuses), never a trade as one.
        late = await subscriber(bus_port, "flowgauge.v1.>")
        snapshots: list[str] = []

        async def live_after_snapshots() -> bool:
            message = orjson.loads(await late.recv())
            if message.get("snapshot"):
                snapshots.append(message["topic"])
                return False
            return True

        await wait_for(live_after_snapshots, "the late joiner's snapshots, then a live message", timeout_s=30)
        assert snapshots and not [t for t in snapshots if topics.is_trades_topic(t)]
        assert not book_reader.done()  # still reading, no assertion failed
        for ws in (trades_ws, books_ws, late):
            await ws.close()
        await book_reader  # ends with the connection; re-raises any assertion of the last messages
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10 * TIMEOUT_FACTOR) == 0


async def test_without_publish_trades_no_trade_is_published(tmp_path: Path) -> None:
    base = all_venues.five_free_ports()
    bus_port, http_port = free_port(), free_port()
    config = daemon_config(tmp_path, base, bus_port, http_port, {}, only=("okx",))  # OKX: it liquidates
    sim_args = ["simulate", "--venue", "okx", "--port", str(base + 2), "--speed", "4"]
    with (
        flowgauge(sim_args, tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon,
    ):
        ws = await subscriber(bus_port, "flowgauge.v1.trades.>", "flowgauge.v1.*.*")
        after_liquidation: list[str] = []
        waiting = False

        async def messages_after_two_liquidations() -> bool:
            nonlocal waiting
            message = orjson.loads(await ws.recv())
            assert not topics.is_trades_topic(message["topic"]), message
            if waiting:
                after_liquidation.append(message["topic"])
                waiting = False
            if message["payload"].get("trigger") == "liquidation":
                check_liquidation_payload(message["payload"])
                waiting = True
            return len(after_liquidation) >= 2

        try:
            await wait_for(messages_after_two_liquidations, "two liquidations and what followed them", timeout_s=90)
        except AssertionError as exc:
            log = (tmp_path / "daemon.log").read_text()[-3000:]
            raise AssertionError(f"{exc}\n{log}") from None
        await ws.close()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10 * TIMEOUT_FACTOR) == 0


async def test_redis_publishes_trades_but_keeps_no_last_value_for_them(tmp_path: Path) -> None:
    book = topics.book_topic("bybit", "BTC/USDT:USDT")
    trades = topics.trades_topic("bybit", "BTC/USDT:USDT")
    with redis_server(tmp_path) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        client = redis.asyncio.Redis.from_url(url)
        pubsub = client.pubsub()
        await pubsub.psubscribe("flowgauge.v1.*")
        confirmed = await pubsub.get_message(timeout=5 * TIMEOUT_FACTOR)
        assert confirmed is not None and confirmed["type"] == "psubscribe"
        publisher = RedisPublisher(url, last_ttl_s=30)
        await publisher.start()
        try:
            publisher.publish(trades, b'{"kind":"trade"}')
            publisher.publish(book, b'{"trigger":"book"}')
            received: list[tuple[str, bytes]] = []

            async def both_published() -> bool:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "pmessage":
                    received.append((message["channel"].decode(), message["data"]))
                return len(received) == 2

            await wait_for(both_published, "both messages on Redis pub/sub")
            assert received == [(trades, b'{"kind":"trade"}'), (book, b'{"trigger":"book"}')]
            # Both went in one pipeline (published before the sender woke): once the book's key is there, the
            # trades topic's would be too.
            await wait_for(lambda: client.get(f"flowgauge:last:{book}"), "the book topic's last-value key")
            assert await client.get(f"flowgauge:last:{trades}") is None
            assert await client.keys("flowgauge:last:flowgauge.v1.trades.*") == []
        finally:
            await publisher.close()
            await pubsub.aclose()
            await client.aclose()
