"""The Redis publisher against a real redis-server the test starts on a free loopback port (never 6379).

* PUBLISH on the topic names reaches a subscriber; the last value of every topic is a key with a TTL; XADD
  keeps an approximately capped stream per topic.
* A quiet topic's last value stays readable while the publisher runs (its TTL is refreshed) and expires once
  it stops.
* With Redis down the outbox drops the oldest and counts; publishing resumes by itself after a restart.
* `flowgauge run` with Redis (and NATS) enabled publishes to every configured backend at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio
import yaml
from prometheus_client import CollectorRegistry
from tests.brokers import nats_server, redis_server
from tests.conftest import BYBIT_RECORDING
from tests.procs import flowgauge, free_port, http_get, wait_for, write_config

from flowgauge.publish import topics
from flowgauge.publish.redis import RedisPublisher
from flowgauge.telemetry.instruments import Telemetry

pytestmark = pytest.mark.integration

BTC = topics.book_topic("bybit", "BTC/USDT:USDT")
ETH = topics.book_topic("bybit", "ETH/USDT:USDT")


class _Listener:
    """A redis-py pattern subscription that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []


@asynccontextmanager
async def _listen(port: int, pattern: str) -> AsyncIterator[_Listener]:
    client = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2)
    pubsub = client.pubsub()
    listener = _Listener()

    async def reader() -> None:
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                listener.messages.append((message["channel"].decode(), orjson.loads(message["data"])))

    await pubsub.psubscribe(pattern)

    async def confirmed() -> bool:
        # The server's psubscribe reply: from here on every PUBLISH matching the pattern reaches us.
        message = await pubsub.get_message(timeout=0.5)
        return message is not None and message["type"] == "psubscribe"

    await wait_for(confirmed, "the pattern subscription confirmed by Redis")
    task = asyncio.create_task(reader())
    try:
        yield listener
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pubsub.aclose()
        await client.aclose()


@asynccontextmanager
async def _client(port: int) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()


async def test_publish_last_values_and_streams(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, backends=("redis",))
    with redis_server(tmp_path) as server:
        publisher = RedisPublisher(f"redis://127.0.0.1:{server.port}/0", telemetry=telemetry, streams=True,
                                   stream_maxlen=10, last_ttl_s=30)
        await publisher.start()
        try:
            async with _listen(server.port, "flowgauge.v1.bybit.*") as listener, _client(server.port) as client:
                for i in range(1000):
                    publisher.publish(BTC, orjson.dumps({"n": i}))
                publisher.publish(ETH, orjson.dumps({"n": -1}))
                await wait_for(lambda: len(listener.messages) == 1001, "every message on the channels")
                assert [m["n"] for _, m in listener.messages[:1000]] == list(range(1000))
                assert listener.messages[-1] == (ETH, {"n": -1})

                # Last values: one key per topic, its newest payload, with a TTL.
                assert orjson.loads(await client.get("flowgauge:last:" + BTC)) == {"n": 999}
                assert orjson.loads(await client.get("flowgauge:last:" + ETH)) == {"n": -1}
                assert 0 < await client.pttl("flowgauge:last:" + BTC) <= 30_000
                # Streams: capped approximately (whole nodes are trimmed), the newest entry last.
                length = await client.xlen("flowgauge:stream:" + BTC)
                assert 10 <= length < 1000
                (_, fields), = await client.xrevrange("flowgauge:stream:" + BTC, count=1)
                assert orjson.loads(fields[b"payload"]) == {"n": 999}
            assert registry.get_sample_value("flowgauge_published_messages_total", {"backend": "redis"}) == 1001
        finally:
            await publisher.close()


async def test_quiet_topic_stays_readable_while_running_and_expires_after(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        publisher = RedisPublisher(f"redis://127.0.0.1:{server.port}", last_ttl_s=1.5)
        await publisher.start()
        key = "flowgauge:last:" + BTC
        async with _client(server.port) as client:
            try:
                publisher.publish(BTC, b'{"n":1}')
                await wait_for(lambda: client.exists(key), "the last-value key")
                first = await client.pttl(key)
                lowest = first

                async def refreshed() -> bool:
                    # The TTL only counts down unless the refresher re-applies it (no new message is published).
                    nonlocal lowest
                    ttl = await client.pttl(key)
                    assert ttl > 0, "the last value of a quiet topic expired while the publisher ran"
                    if ttl < lowest:
                        lowest = ttl
                        return False
                    return ttl > lowest + 200

                await wait_for(refreshed, "the TTL of a quiet topic refreshed", timeout_s=5)
                assert publisher.published == 1
            finally:
                await publisher.close()
            # Stopped: nothing refreshes it any more, so it expires within its TTL.
            await wait_for(lambda: _gone(client, key), "the last value expiring after the publisher stopped",
                           timeout_s=5)


async def _gone(client: redis.asyncio.Redis, key: str) -> bool:
    return not await client.exists(key)


async def test_redis_down_drops_and_counts_then_resumes(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, backends=("redis",))
    with redis_server(tmp_path) as server:
        publisher = RedisPublisher(f"redis://127.0.0.1:{server.port}", telemetry=telemetry, queue_size=50,
                                   connect_timeout_s=0.5, reconnect_max_s=0.2)
        await publisher.start()
        try:
            await wait_for(lambda: publisher.connected, "first connection")
            server.stop()
            # The publisher notices on its next write: push one message until a failure is seen.
            publisher.publish(BTC, b'{"n":-1}')
            await wait_for(lambda: not publisher.connected, "the publisher noticing Redis is gone")
            failed = publisher.dropped
            for i in range(500):
                publisher.publish(BTC, orjson.dumps({"n": i}))
            assert len(publisher.outbox) == 50
            queue_full = registry.get_sample_value("flowgauge_publish_dropped_total",
                                                   {"backend": "redis", "reason": "queue_full"})
            assert queue_full == 450 and publisher.dropped == failed + 450

            server.start()
            async with _listen(server.port, "flowgauge.v1.*.*") as listener:
                await wait_for(lambda: publisher.connected, "the publisher reconnecting by itself")
                for i in range(1000, 1010):
                    publisher.publish(BTC, orjson.dumps({"n": i}))
                await wait_for(lambda: {m["n"] for _, m in listener.messages} >= set(range(1000, 1010)),
                               "payloads published after the restart")
            early = [m["n"] for _, m in listener.messages if m["n"] < 1000]
            assert all(n >= 450 for n in early) and early == sorted(early)  # only the newest were kept
        finally:
            await publisher.close()


async def test_daemon_publishes_to_redis_and_nats_at_once(tmp_path: Path) -> None:
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    with redis_server(tmp_path) as rserver, nats_server(tmp_path) as nserver:
        config = write_config(tmp_path / "cfg.yaml", sim_port, bus_port, http_port)
        data = yaml.safe_load(config.read_text())
        data["bus"]["redis"] = {"url": f"redis://127.0.0.1:{rserver.port}/0"}
        data["bus"]["nats"] = {"url": f"nats://127.0.0.1:{nserver.port}"}
        config.write_text(yaml.safe_dump(data))
        sim_args = ["simulate", "--venue", "bybit", "--recording", str(BYBIT_RECORDING), "--port", str(sim_port),
                    "--speed", "4"]
        async with _listen(rserver.port, "flowgauge.v1.bybit.*") as listener, _client(rserver.port) as client:
            with (
                flowgauge(sim_args, tmp_path / "sim.log"),
                flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon,
            ):
                def both_books() -> bool:
                    symbols = {p["symbol"] for _, p in listener.messages if p.get("book_state") == "VALID"}
                    return {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= symbols

                await wait_for(both_books, "VALID book payloads for BTC and ETH over Redis")
                last = orjson.loads(await client.get("flowgauge:last:" + BTC))
                assert last["symbol"] == "BTC/USDT:USDT" and last["venue"] == "bybit"

                async def every_backend_published() -> bool:
                    code, text = await http_get(http_port, "/metrics")
                    return code == 200 and all(
                        f'flowgauge_published_messages_total{{backend="{b}"}} 0.0' not in text
                        and f'flowgauge_published_messages_total{{backend="{b}"}}' in text
                        for b in ("embedded", "nats", "redis")
                    )

                await wait_for(every_backend_published, "payloads counted for embedded, nats and redis")
                code, body = await http_get(http_port, "/status")
                assert code == 200
                publishers = orjson.loads(body)["publishers"]
                assert set(publishers) == {"nats", "redis"}
                assert publishers["nats"]["connected"] and publishers["redis"]["connected"]
                assert publishers["nats"]["published"] > 0 and publishers["redis"]["published"] > 0
                daemon.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(daemon.wait, 10) == 0


async def test_daemon_starts_and_stops_while_both_brokers_are_down(tmp_path: Path) -> None:
    """Unreachable brokers delay neither startup nor SIGTERM; their series exist from the start."""
    closed_port, bus_port, http_port = free_port(), free_port(), free_port()
    config = write_config(tmp_path / "cfg.yaml", closed_port, bus_port, http_port)
    data = yaml.safe_load(config.read_text())
    data["bus"]["redis"] = {"url": f"redis://127.0.0.1:{closed_port}/0", "reconnect_max_s": 0.2}
    data["bus"]["nats"] = {"url": f"nats://127.0.0.1:{closed_port}", "reconnect_wait_s": 0.2}
    config.write_text(yaml.safe_dump(data))
    with flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon:
        async def metrics() -> str | None:
            code, text = await http_get(http_port, "/metrics")
            return text if code == 200 else None

        text = await wait_for(metrics, "/metrics while both brokers are down")
        for backend in ("nats", "redis"):
            assert f'flowgauge_publish_dropped_total{{backend="{backend}",reason="queue_full"}} 0.0' in text
        started = asyncio.get_running_loop().time()
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 10) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
        assert asyncio.get_running_loop().time() - started < 5
