"""Two shards cover every instrument exactly once: two `flowgauge run` processes (shard 0 of 2 from the config file,
shard 1 of 2 from `FLOWGAUGE_SHARD__INDEX`, as a StatefulSet pod would set it) against `flowgauge simulate --venue
all`, both publishing to one real nats-server the test starts.

* Each daemon's /status names its shard and its instruments: the two lists are disjoint, their union is the
  configured set, and each is the split `shard_of` defines.
* A venue with no instrument in a shard is not connected by that daemon at all (no venue entry, no websocket
  series on its /metrics).
* A nats-py subscriber on `flowgauge.v1.>` receives VALID book payloads of every configured instrument, each from one
  publisher only (an instrument's `seq` never repeats, which two daemons publishing it would make it do), and the
  status heartbeats of every instrument.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import yaml
from nats.aio.msg import Msg
from prometheus_client.parser import text_string_to_metric_families
from tests.brokers import nats_server, subscribe_live
from tests.integration.test_all_venues import SYMBOLS, VENUES, WS_PATHS, five_free_ports
from tests.procs import flowgauge, free_port, http_get, wait_for

from flowgauge.config import shard_of

pytestmark = pytest.mark.integration

COUNT = 2
Key = tuple[str, str]


def _config(path: Path, base: int, nats_port: int, bus_port: int, http_port: int) -> Path:
    venues = {
        venue: {
            "symbols": SYMBOLS[venue],
            "ws_url": f"ws://127.0.0.1:{base + offset}{WS_PATHS[venue]}",
            "rest_url": f"http://127.0.0.1:{base + offset}",
            "stale_after_s": 15,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 1.0,
        }
        for offset, venue in enumerate(VENUES)
    }
    config = {
        "venues": venues,
        "bus": {
            "embedded": {"host": "127.0.0.1", "port": bus_port},
            "nats": {"url": f"nats://127.0.0.1:{nats_port}", "reconnect_wait_s": 0.2},
        },
        "http": {"host": "127.0.0.1", "port": http_port},
        "publish": {"heartbeat_s": 0.5},
        "shard": {"index": 0, "count": COUNT},
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def _status(http_port: int) -> dict[str, Any]:
    code, body = await http_get(http_port, "/status")
    assert code == 200
    return dict(orjson.loads(body))


async def _ws_venues(http_port: int) -> set[str]:
    """Venues with websocket series on the daemon's /metrics (a venue it never connects has none)."""
    code, text = await http_get(http_port, "/metrics")
    assert code == 200
    return {
        sample.labels["venue"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("flowgauge_ws_") and "venue" in sample.labels
    }


async def test_two_shards_publish_every_instrument_once_to_one_nats(tmp_path: Path) -> None:
    wanted = {(venue, symbol) for venue, symbols in SYMBOLS.items() for symbol in symbols}
    expected = {index: {key for key in wanted if shard_of(*key, COUNT) == index} for index in range(COUNT)}
    # The split of these instruments leaves each shard without some venue: what "not connected" is checked on.
    for index in range(COUNT):
        assert expected[index] and {venue for venue, _ in expected[index]} < set(VENUES), expected

    base = five_free_ports()
    http_ports = [free_port(), free_port()]
    bus_ports = [free_port(), free_port()]
    books: dict[Key, list[dict[str, Any]]] = {}
    heartbeats: Counter[Key] = Counter()

    async def on_msg(msg: Msg) -> None:
        if msg.subject.startswith("flowgauge.v1.agg."):
            return  # a shard's cross-venue aggregates: not a book's
        payload = orjson.loads(msg.data)
        key = (payload["venue"], payload["symbol"])
        if msg.subject.startswith("flowgauge.v1.status."):
            heartbeats[key] += payload["heartbeat"] is True
        elif payload.get("trigger") == "book":
            books.setdefault(key, []).append(payload)

    with nats_server(tmp_path) as server:
        config = _config(tmp_path / "shards.yaml", base, server.port, bus_ports[0], http_ports[0])
        nc = await nats.connect(f"nats://127.0.0.1:{server.port}", allow_reconnect=False, connect_timeout=2)
        try:
            await subscribe_live(nc, "flowgauge.v1.>", on_msg)
            # Shard 1 differs only by environment: the same file, as every pod of a StatefulSet would share it.
            shard_1_env = {
                "FLOWGAUGE_SHARD__INDEX": "1",
                "FLOWGAUGE_HTTP__PORT": str(http_ports[1]),
                "FLOWGAUGE_BUS__EMBEDDED__PORT": str(bus_ports[1]),
            }
            sim_args = ["simulate", "--venue", "all", "--base-port", str(base), "--speed", "4"]
            with (
                flowgauge(sim_args, tmp_path / "sim.log"),
                flowgauge(["run", "-c", str(config)], tmp_path / "shard0.log") as shard_0,
                flowgauge(["run", "-c", str(config)], tmp_path / "shard1.log", env=shard_1_env) as shard_1,
            ):

                def every_book_valid_with_heartbeats() -> bool:
                    valid = {key for key, seen in books.items() if any(p["book_state"] == "VALID" for p in seen)}
                    return valid >= wanted and all(heartbeats[key] >= 2 for key in wanted)

                try:
                    await wait_for(every_book_valid_with_heartbeats, "VALID books and heartbeats of all ten", 90)
                except AssertionError:
                    logs = "\n".join((tmp_path / f"shard{i}.log").read_text()[-2000:] for i in range(COUNT))
                    raise AssertionError(f"books {sorted(books)}, heartbeats {dict(heartbeats)}\n{logs}") from None

                runs: dict[int, set[Key]] = {}
                for index, port in enumerate(http_ports):
                    status = await _status(port)
                    configured = status["configured"]
                    runs[index] = {(venue, symbol) for venue, symbols in configured.items() for symbol in symbols}
                    assert status["shard"] == {"index": index, "count": COUNT, "instruments": len(runs[index])}
                    assert runs[index] == expected[index], index
                    # Only its own venues: the others are neither listed nor connected.
                    own_venues = {venue for venue, _ in runs[index]}
                    assert set(status["venues"]) == own_venues == set(status["venue_status"])
                    assert await _ws_venues(port) == own_venues, index
                    # It published every one of its books (and, by the disjoint lists, none of the others).
                    assert all(
                        status["venues"][venue][symbol]["published"] > 0 for venue, symbol in runs[index]
                    ), status["venues"]
                assert not runs[0] & runs[1]
                assert runs[0] | runs[1] == wanted

                # One publisher per instrument: its seq counts up without ever repeating on the shared subjects.
                for key in sorted(wanted):
                    seqs = [p["seq"] for p in books[key]]
                    assert len(seqs) == len(set(seqs)), (key, [s for s, n in Counter(seqs).items() if n > 1][:5])

                for daemon in (shard_0, shard_1):
                    daemon.send_signal(signal.SIGTERM)
                for index, daemon in enumerate((shard_0, shard_1)):
                    code = await asyncio.to_thread(daemon.wait, 10)
                    assert code == 0, (tmp_path / f"shard{index}.log").read_text()[-3000:]
        finally:
            await nc.close()


async def test_a_shard_without_instruments_runs_idle_and_ready(tmp_path: Path) -> None:
    """More shards than instruments: the empty one starts, says so, connects nothing, is ready, stops cleanly."""
    symbol = "BTC/USDT:USDT"
    empty_index = 1 - shard_of("bybit", symbol, 2)  # the shard this one instrument does not fall in
    dead_port = free_port()  # nothing listens there: had the daemon tried the venue, it would log failures
    http_port, bus_port = free_port(), free_port()
    config = tmp_path / "empty.yaml"
    config.write_text(yaml.safe_dump({
        "venues": {"bybit": {
            "symbols": [symbol],
            "ws_url": f"ws://127.0.0.1:{dead_port}/v5/public/linear",
            "rest_url": f"http://127.0.0.1:{dead_port}",
        }},
        "bus": {"embedded": {"host": "127.0.0.1", "port": bus_port}},
        "http": {"host": "127.0.0.1", "port": http_port},
        "shard": {"index": empty_index, "count": 2},
    }))
    with flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon:

        async def ready() -> bool:
            code, _ = await http_get(http_port, "/readyz")
            return code == 200

        await wait_for(ready, "/readyz 200 on the empty shard")
        status = await _status(http_port)
        assert status["shard"] == {"index": empty_index, "count": 2, "instruments": 0}
        assert status["venues"] == {} and status["configured"] == {}
        assert await _ws_venues(http_port) == set()
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 10) == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "shard_empty" in log
    assert "markets_load_failed" not in log  # the venue was never contacted
