"""The per-book status heartbeat, end to end: `flowgauge run` against the Bybit simulator, a subscriber on the
embedded bus.

* `publish.heartbeat_s: 0.2`: every book's status arrives again and again, `"heartbeat": true`, about one period
  apart, while its state does not change; each carries `ts_last_update` (the newest metrics payload's `ts_recv`);
  a subscriber joining later gets a heartbeat as the status topic's current value (the bus's latest-value cache is
  refreshed by it).
* `publish.heartbeat_s: 0`: no heartbeat at all, over more than a second of live book payloads (well over five
  periods of the first case).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import BYBIT_RECORDING
from tests.procs import flowgauge, free_port, wait_for, write_config

from flowgauge.app import Daemon
from flowgauge.client import BusMessage, EmbeddedSubscriber
from flowgauge.config import load_settings, shard_of

pytestmark = pytest.mark.integration

SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")
PERIOD_S = 0.2
BEATS = 4  # heartbeats per book, all of one unchanged state
S = 1_000_000_000


def _config(tmp_path: Path, heartbeat_s: float) -> tuple[Path, int, int]:
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    config = write_config(tmp_path / "cfg.yaml", sim_port, bus_port, http_port)
    data = yaml.safe_load(config.read_text())
    data["publish"] = {"heartbeat_s": heartbeat_s}
    config.write_text(yaml.safe_dump(data))
    return config, sim_port, bus_port


def _sim_args(sim_port: int) -> list[str]:
    recording = str(BYBIT_RECORDING)
    return ["simulate", "--venue", "bybit", "--recording", recording, "--port", str(sim_port), "--speed", "4"]


@contextlib.asynccontextmanager
async def _collecting(bus_port: int, patterns: list[str]) -> AsyncIterator[list[BusMessage]]:
    """Every message the bus sends a subscriber of `patterns` (current values first), appended as it arrives."""
    subscriber = EmbeddedSubscriber(f"ws://127.0.0.1:{bus_port}", patterns)
    await wait_for(subscriber.__aenter__, "the daemon's embedded bus")
    received: list[BusMessage] = []

    async def collect() -> None:
        async for message in subscriber.messages():
            received.append(message)

    task = asyncio.create_task(collect())
    try:
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await subscriber.__aexit__(None, None, None)


def _statuses(received: list[BusMessage], symbol: str) -> list[dict[str, Any]]:
    return [m.payload for m in received if ".status." in m.topic and m.payload["symbol"] == symbol and not m.snapshot]


async def test_heartbeats_arrive_for_every_book_while_its_state_holds(tmp_path: Path) -> None:
    config, sim_port, bus_port = _config(tmp_path, PERIOD_S)
    with (
        flowgauge(_sim_args(sim_port), tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon,
    ):
        async with _collecting(bus_port, ["flowgauge.v1.status.bybit.>"]) as received:

            def beats_of_one_state(symbol: str) -> list[dict[str, Any]]:
                """The heartbeats since the book's last status, if they are BEATS of VALID (else [])."""
                statuses = _statuses(received, symbol)
                tail: list[dict[str, Any]] = []
                for status in reversed(statuses):  # the run of heartbeats at the end, newest first
                    if not status["heartbeat"]:
                        break
                    tail.append(status)
                tail.reverse()
                if len(tail) >= BEATS and all(s["state"] == "VALID" for s in tail):
                    return tail
                return []

            try:
                await wait_for(lambda: all(beats_of_one_state(s) for s in SYMBOLS), "heartbeats of both books", 60)
            except AssertionError:
                log = (tmp_path / "daemon.log").read_text()[-3000:]
                raise AssertionError(f"statuses: {[m.payload for m in received]}\n{log}") from None

            for symbol in SYMBOLS:
                beats = beats_of_one_state(symbol)
                first = beats[0]
                for beat in beats:
                    # The same book status, again and again: only the times move.
                    assert {k: beat[k] for k in ("state", "reason", "detail", "resyncs")} == {
                        k: first[k] for k in ("state", "reason", "detail", "resyncs")
                    }, symbol
                    assert beat["ts_recv"] <= beat["ts_publish"]
                    # The book publishes payloads all along: ts_last_update is one of them, not in the future.
                    assert beat["ts_last_update"] is not None and beat["ts_last_update"] <= beat["ts_publish"], beat
                # About one period apart on average (a fixed schedule: never a burst of several at once). Single
                # gaps are not bounded below: a beat woken late by a loaded machine is followed by one on time.
                gaps = [(b["ts_publish"] - a["ts_publish"]) / S for a, b in itertools.pairwise(beats)]
                assert sum(gaps) / len(gaps) > PERIOD_S / 2, gaps
                assert all(gap > 0 for gap in gaps), gaps

        # A late joiner's current value of a status topic is the newest heartbeat: the bus's cache is refreshed.
        async with _collecting(bus_port, ["flowgauge.v1.status.bybit.>"]) as late:
            await wait_for(lambda: {m.payload["symbol"] for m in late if m.snapshot} >= set(SYMBOLS), "snapshots")
            snapshots = [m.payload for m in late if m.snapshot]
            assert all(p["heartbeat"] is True for p in snapshots), snapshots

        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 10) == 0, (tmp_path / "daemon.log").read_text()[-3000:]


async def test_no_heartbeat_when_turned_off(tmp_path: Path) -> None:
    config, sim_port, bus_port = _config(tmp_path, 0)
    with (
        flowgauge(_sim_args(sim_port), tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon,
    ):
        async with _collecting(bus_port, ["flowgauge.v1.bybit.>", "flowgauge.v1.status.bybit.>"]) as received:

            def valid_books() -> list[dict[str, Any]]:
                return [
                    m.payload for m in received
                    if ".status." not in m.topic and m.payload.get("trigger") == "book"
                    and m.payload["book_state"] == "VALID"
                ]

            def watched_long_enough() -> bool:
                # Both books live, and book payloads spanning more than a second (the daemon's own clock).
                books = valid_books()
                if {p["symbol"] for p in books} < set(SYMBOLS):
                    return False
                return (books[-1]["ts_publish"] - books[0]["ts_publish"]) / S > 5 * PERIOD_S + 0.1

            await wait_for(watched_long_enough, "over a second of live book payloads", 60)
            statuses = [m.payload for m in received if ".status." in m.topic]
            assert statuses, "no status at all: the state-change statuses should have arrived"
            assert all(s["heartbeat"] is False for s in statuses), statuses

        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 10) == 0, (tmp_path / "daemon.log").read_text()[-3000:]


async def test_a_failing_heartbeat_round_is_logged_and_the_next_one_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The heartbeat task never takes the daemon down: a round that raises is logged (heartbeat_failed) and the
    schedule goes on; a stop request still ends the daemon cleanly. In process, on an empty shard (no venue
    contacted), with the engine's heartbeat made to fail on its first round."""
    symbol = "BTC/USDT:USDT"
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({
        "venues": {"bybit": {"symbols": [symbol]}},
        "bus": {"embedded": {"host": "127.0.0.1", "port": 0}},
        "http": {"host": "127.0.0.1", "port": 0},
        "publish": {"heartbeat_s": 0.05},
        "shard": {"index": 1 - shard_of("bybit", symbol, 2), "count": 2},
    }))
    daemon = Daemon(load_settings(config, {}))
    rounds = 0

    def flaky_heartbeats() -> int:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("first round fails")
        return 0

    daemon.engine.publish_heartbeats = flaky_heartbeats  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="flowgauge.app")
    running = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: rounds >= 3 or running.done(), "three heartbeat rounds", 10)
        assert not running.done(), running
        assert any("heartbeat_failed" in record.getMessage() for record in caplog.records), caplog.text
    finally:
        daemon.stop.set()
        async with asyncio.timeout(10):
            await running  # returns: a stop request, not an error, ended it
