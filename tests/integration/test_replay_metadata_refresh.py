"""Replay of a recording that holds metadata refreshes (the lifecycle's `markets_refresh_s`): the daemon records each
refreshed answer under `<VENUE>.http.markets`, and hands it to ccxt only, never to the engine. Hyperliquid's metadata
request (POST /info, metaAndAssetCtxs) is also its open-interest poll: replay must not take a refresh for a poll
answer, or it publishes open-interest and funding payloads the live daemon never published.

Hyperliquid alone, refreshing every 0.5 s: record live, replay the files, and compare every non-book payload (the
open-interest and funding ones) of the two books, in order."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from tests.integration.test_all_venues import SYMBOLS
from tests.procs import flowgauge, free_port, http_get, wait_for

from flowgauge.client import EmbeddedSubscriber
from flowgauge.recording import Http, iter_records

pytestmark = pytest.mark.integration

VENUE = "hyperliquid"


def _non_book(messages: list[tuple[str, dict[str, Any]]]) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for topic, payload in messages:
        if ".status." in topic or ".bars." in topic or payload.get("trigger") == "book":
            continue
        out.setdefault(payload["symbol"], []).append((payload["trigger"], payload["seq"]))
    return out


async def test_metadata_refreshes_in_a_recording_are_not_replayed_as_polls(tmp_path: Path) -> None:
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    config = tmp_path / "hl.yaml"
    config.write_text(yaml.safe_dump({
        "venues": {VENUE: {
            "symbols": SYMBOLS[VENUE], "ws_url": f"ws://127.0.0.1:{sim_port}/ws",
            "rest_url": f"http://127.0.0.1:{sim_port}", "backoff_initial_s": 0.1, "backoff_max_s": 1.0,
            "markets_refresh_s": 0.5,
        }},
        "bus": {"embedded": {"host": "127.0.0.1", "port": bus_port, "client_queue": 1_000_000}},
        "http": {"host": "127.0.0.1", "port": http_port},
        "publish": {"min_interval_ms": 0, "conflate": "off"},
    }))  # fmt: skip
    record_dir = tmp_path / "rec"
    live: list[tuple[str, dict[str, Any]]] = []
    with flowgauge(["record", str(record_dir), "-c", str(config)], tmp_path / "daemon.log") as daemon:
        subscriber = EmbeddedSubscriber(f"ws://127.0.0.1:{bus_port}", ["flowgauge.v1.>"])
        await wait_for(subscriber.__aenter__, "the daemon's embedded bus")

        async def collect() -> None:
            async for topic, payload in subscriber:
                live.append((topic, payload))

        collector = asyncio.create_task(collect())
        try:
            sim = ["simulate", "--venue", VENUE, "--port", str(sim_port), "--speed", "4"]
            with flowgauge(sim, tmp_path / "sim.log") as simulator:

                def refreshed_while_streaming() -> bool:
                    records = [r for f in record_dir.glob("*.jsonl.zst") for r in _records(f)]
                    markets = [r for r in records if isinstance(r, Http) and r.conn.endswith("http.markets")]
                    return len(markets) >= 6 and len(_non_book(live).get(SYMBOLS[VENUE][0], [])) >= 2

                await wait_for(refreshed_while_streaming, "metadata refreshes recorded while streaming", 60)
                simulator.send_signal(signal.SIGTERM)
                await asyncio.to_thread(simulator.wait, 10)

            async def subscriber_has_everything() -> bool:
                code, body = await http_get(http_port, "/status")
                if code != 200:
                    return False
                books = orjson.loads(body)["venues"][VENUE]
                received = [p["symbol"] for t, p in live if ".status." not in t and ".bars." not in t]
                return all(books[s]["published"] == received.count(s) for s in SYMBOLS[VENUE])

            await wait_for(subscriber_has_everything, "every payload the daemon published")
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            await subscriber.__aexit__(None, None, None)
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 10) == 0

    files = sorted(record_dir.glob("*.jsonl.zst"))
    out = tmp_path / "replay.jsonl"
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "flowgauge", "replay", *map(str, files), "--out", str(out), "-c", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    replayed = [(m["topic"], m["payload"]) for m in map(orjson.loads, out.read_bytes().splitlines())]
    live_non_book, replayed_non_book = _non_book(live), _non_book(replayed)
    for symbol in SYMBOLS[VENUE]:
        assert replayed_non_book.get(symbol) == live_non_book.get(symbol), symbol


def _records(path: Path) -> list[object]:
    with contextlib.suppress(Exception):  # the file being written: read what is complete
        return list(iter_records(path))
    return []
