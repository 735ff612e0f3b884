"""The NATS publisher against a real nats-server the test starts on a free loopback port.

* The daemon (`flowgauge run` against the Bybit simulator, NATS enabled by config) publishes its payloads on
  the README's subjects; a nats-py subscriber receives them; a nats-server restart mid-stream: the daemon keeps
  running, reconnects by itself and later payloads arrive; /metrics has `backend="nats"` series and no redis ones.
* With NATS down, the bounded outbox drops the oldest messages and counts them (`reason="queue_full"`), and
  publishing resumes by itself when the server is back.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import yaml
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from tests.brokers import nats_server, subscribe_live
from tests.conftest import BYBIT_RECORDING
from tests.procs import flowgauge, free_port, http_get, wait_for, write_config

from flowgauge.publish.nats import NatsPublisher
from flowgauge.telemetry.instruments import Telemetry

pytestmark = pytest.mark.integration


class _Collector:
    """A nats-py subscription that keeps every received payload (bounded by the test's own volume)."""

    def __init__(self) -> None:
        self.payloads: list[tuple[str, dict[str, Any]]] = []

    async def on_msg(self, msg: Msg) -> None:
        self.payloads.append((msg.subject, orjson.loads(msg.data)))


async def _subscribe(port: int, subject: str) -> tuple[NatsClient, _Collector]:
    """Subscribe to `subject` and return once the server holds the subscription (what the caller publishes
    afterwards reaches it: `subscribe_live`)."""
    collector = _Collector()
    nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False, connect_timeout=2)
    try:
        await subscribe_live(nc, subject, collector.on_msg)
    except BaseException:
        await nc.close()
        raise
    return nc, collector


async def _metrics(http_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, text = await http_get(http_port, "/metrics")
    assert code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_daemon_publishes_to_nats_and_survives_a_server_restart(tmp_path: Path) -> None:
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    with nats_server(tmp_path) as server:
        config = write_config(tmp_path / "cfg.yaml", sim_port, bus_port, http_port)
        data = yaml.safe_load(config.read_text())
        data["bus"]["nats"] = {"url": f"nats://127.0.0.1:{server.port}", "reconnect_wait_s": 0.2}
        config.write_text(yaml.safe_dump(data))
        sim_args = ["simulate", "--venue", "bybit", "--recording", str(BYBIT_RECORDING), "--port", str(sim_port),
                    "--speed", "4"]
        with (
            flowgauge(sim_args, tmp_path / "sim.log"),
            flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon,
        ):
            nc, seen = await _subscribe(server.port, "flowgauge.v1.bybit.>")
            try:
                def both_books() -> bool:
                    symbols = {p["symbol"] for _, p in seen.payloads if p["book_state"] == "VALID"}
                    return {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= symbols

                await wait_for(both_books, "VALID book payloads for BTC and ETH over NATS")
            finally:
                await nc.close()
            subject, payload = next((s, p) for s, p in seen.payloads if p["symbol"] == "BTC/USDT:USDT")
            assert subject == "flowgauge.v1.bybit.BTC-USDT-USDT"
            assert payload["schema"] == "flowgauge.v1" and payload["venue"] == "bybit"

            samples = await _metrics(http_port)
            assert samples[("flowgauge_published_messages_total", (("backend", "nats"),))] > 0
            assert ("flowgauge_publish_dropped_total", (("backend", "nats"), ("reason", "queue_full"))) in samples
            # Only configured backends have series (embedded and nats here).
            backends = {dict(labels).get("backend") for name, labels in samples if name.startswith("flowgauge_publ")}
            assert backends == {"embedded", "nats"}

            # Restart the server mid-stream: the daemon keeps running and publishes again by itself.
            server.stop()
            server.start()
            nc, after = await _subscribe(server.port, "flowgauge.v1.bybit.>")
            try:
                await wait_for(lambda: len(after.payloads) >= 10, "payloads after the nats-server restart")
            finally:
                await nc.close()
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            log = (tmp_path / "daemon.log").read_text()
            assert "nats_reconnected" in log

            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(daemon.wait, 10) == 0, log[-3000:]


async def test_outbox_drops_oldest_and_counts_while_nats_is_down(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, backends=("nats",))
    with nats_server(tmp_path) as server:
        publisher = NatsPublisher(
            f"nats://127.0.0.1:{server.port}", telemetry=telemetry, queue_size=50, reconnect_wait_s=0.1
        )
        await publisher.start()
        try:
            await wait_for(lambda: publisher.connected, "first connection")
            server.stop()
            await wait_for(lambda: not publisher.connected, "the publisher noticing the server is gone")

            for i in range(500):
                publisher.publish("flowgauge.v1.bybit.BTC-USDT-USDT", orjson.dumps({"n": i}))

            # The outbox kept the newest 50 and dropped (and counted) the 450 oldest; the engine never waited.
            assert len(publisher.outbox) == 50
            assert publisher.dropped == 450
            labels = {"backend": "nats", "reason": "queue_full"}
            assert registry.get_sample_value("flowgauge_publish_dropped_total", labels) == 450

            server.start()
            nc, seen = await _subscribe(server.port, "flowgauge.v1.>")
            try:
                await wait_for(lambda: publisher.connected, "the publisher reconnecting by itself")
                for i in range(1000, 1010):
                    publisher.publish("flowgauge.v1.bybit.BTC-USDT-USDT", orjson.dumps({"n": i}))
                await wait_for(
                    lambda: {p["n"] for _, p in seen.payloads} >= set(range(1000, 1010)),
                    "payloads published after the restart",
                )
            finally:
                await nc.close()
            # Whatever of the queued 50 arrived, it was the newest ones, in order: nothing older than #450.
            early = [p["n"] for _, p in seen.payloads if p["n"] < 1000]
            assert all(n >= 450 for n in early) and early == sorted(early)
            published = registry.get_sample_value("flowgauge_published_messages_total", {"backend": "nats"})
            assert published is not None and published >= 10
        finally:
            await publisher.close()


async def test_publisher_started_while_nats_is_down_connects_later(tmp_path: Path) -> None:
    """A broker outage at daemon start delays nothing: start() returns, messages wait (bounded), then flow."""
    with nats_server(tmp_path) as server:
        server.stop()
        publisher = NatsPublisher(f"nats://127.0.0.1:{server.port}", queue_size=100, reconnect_wait_s=0.1,
                                  connect_timeout_s=0.5)
        async with asyncio.timeout(2):
            await publisher.start()  # returns at once although nothing listens
        try:
            publisher.publish("flowgauge.v1.okx.BTC-USDT-USDT", b'{"n":1}')
            assert not publisher.connected
            server.start()
            nc, seen = await _subscribe(server.port, "flowgauge.v1.>")
            try:
                await wait_for(lambda: publisher.connected, "the first connection once the server is up")
                publisher.publish("flowgauge.v1.okx.BTC-USDT-USDT", b'{"n":2}')
                await wait_for(lambda: any(p["n"] == 2 for _, p in seen.payloads), "a payload after connecting")
            finally:
                await nc.close()
        finally:
            await publisher.close()


async def test_a_late_disconnected_callback_does_not_stall_a_live_connection(tmp_path: Path) -> None:
    """nats-py may deliver the disconnected callback of a failed first attempt after the connection is up
    (seen on a loaded machine): the publisher must keep sending."""
    with nats_server(tmp_path) as server:
        publisher = NatsPublisher(f"nats://127.0.0.1:{server.port}", queue_size=100, reconnect_wait_s=0.1,
                                  connect_timeout_s=0.5)
        await publisher.start()
        nc, seen = await _subscribe(server.port, "flowgauge.v1.>")
        try:
            await wait_for(lambda: publisher.connected, "the connection")
            await publisher._on_disconnected()  # the stale callback, delivered now
            assert publisher.connected
            publisher.publish("flowgauge.v1.okx.BTC-USDT-USDT", b'{"n":3}')
            await wait_for(lambda: any(p["n"] == 3 for _, p in seen.payloads), "a payload after the stale callback")
        finally:
            await nc.close()
            await publisher.close()


async def test_sender_trusts_the_client_state_over_a_lost_wakeup(tmp_path: Path) -> None:
    """Seen under load: connected, then a stale "disconnected" while the client was between states, and no
    "reconnected" after it. The sender must notice the client is up by itself rather than wait forever."""
    with nats_server(tmp_path) as server:
        publisher = NatsPublisher(f"nats://127.0.0.1:{server.port}", queue_size=100, reconnect_wait_s=0.1,
                                  connect_timeout_s=0.5)
        await publisher.start()
        nc, seen = await _subscribe(server.port, "flowgauge.v1.>")
        try:
            await wait_for(lambda: publisher.connected, "the connection")
            publisher._connected.clear()  # the wakeup lost to the callbacks' order
            publisher.publish("flowgauge.v1.okx.BTC-USDT-USDT", b'{"n":4}')
            await wait_for(lambda: any(p["n"] == 4 for _, p in seen.payloads), "a payload despite the lost wakeup")
        finally:
            await nc.close()
            await publisher.close()
