"""Backlog conflation in the real daemon (issue 8 item 6).

Timeline: the Bybit simulator at 50x speed -> the daemon (recording raw frames) with `publish.conflate: auto`
and an age threshold of 1 us, so every frame counts as queued and each book publishes once per loop turn ->
a bus subscriber sees CONFLATED payloads while /metrics shows `flowgauge_payloads_conflated_total` rising ->
SIGTERM -> the recorded frames replayed unconflated: every live book payload is VALID and equal to the
replay's payload for the same book state (publish counter, times, `ofi_l1` and the CONFLATED flag aside). With
`conflate: off` the same setup publishes no CONFLATED payload and the counter stays 0.
"""

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
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import BYBIT_RECORDING
from tests.procs import flowgauge, free_port, http_get, wait_for, write_config
from websockets.asyncio.client import connect

pytestmark = pytest.mark.integration

COUNTER = "flowgauge_payloads_conflated_total"
# What a live payload and its replay may differ in. `ofi_l1` sums the L1 flow since the previous published payload,
# so a conflated payload's holds the flow of the payloads it replaced (tests/unit/test_engine.py checks that sum).
IGNORED = ("seq", "ts_recv", "ts_publish", "ofi_l1")


def _config(tmp_path: Path, mode: str) -> tuple[Path, int, int, int]:
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    path = write_config(tmp_path / f"{mode}.yaml", sim_port, bus_port, http_port)
    config = yaml.safe_load(path.read_text())
    config["publish"] = {"conflate": mode, "conflate_after_ms": 0.001}
    path.write_text(yaml.safe_dump(config))
    return path, sim_port, bus_port, http_port


async def _conflated_counter(http_port: int) -> tuple[float] | None:
    """(the counter's value,) once /metrics shows it (a tuple, so that a 0 still ends the wait)."""
    code, text = await http_get(http_port, "/metrics")
    if code != 200:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == COUNTER and sample.labels.get("venue") == "bybit":
                return (sample.value,)
    return None


def _comparable(payload: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in payload.items() if k not in IGNORED}
    out["quality"] = [flag for flag in payload["quality"] if flag != "CONFLATED"]
    return out


async def _run(tmp_path: Path, mode: str, enough: int) -> tuple[list[dict[str, Any]], float, list[Path]]:
    """Run simulator + daemon until `enough` CONFLATED payloads (auto) or book payloads (off) were seen."""
    config, sim_port, bus_port, http_port = _config(tmp_path, mode)
    record_dir = tmp_path / f"rec-{mode}"
    sim = ["simulate", "--venue", "bybit", "--recording", str(BYBIT_RECORDING), "--port", str(sim_port)]
    books: list[dict[str, Any]] = []
    with (
        flowgauge([*sim, "--speed", "50"], tmp_path / f"sim-{mode}.log"),
        flowgauge(["run", "-c", str(config), "--record", str(record_dir)], tmp_path / f"daemon-{mode}.log") as daemon,
    ):

        async def subscribe() -> Any:
            ws = await connect(f"ws://127.0.0.1:{bus_port}", open_timeout=2)
            await ws.send(orjson.dumps({"op": "subscribe", "patterns": ["flowgauge.v1.bybit.>"]}).decode())
            assert orjson.loads(await ws.recv())["op"] == "subscribed"
            return ws

        ws = await wait_for(subscribe, "embedded bus subscription")

        async def read_all() -> None:
            # Read as fast as the daemon publishes: a subscriber that falls behind is dropped by the bus.
            async for message in ws:
                payload = orjson.loads(message)["payload"]
                if payload.get("trigger") == "book":
                    books.append(payload)

        reader = asyncio.create_task(read_all())

        def seen_enough() -> bool:
            assert not reader.done(), reader.exception() if not reader.cancelled() else "reader cancelled"
            if mode == "off":
                return len(books) >= enough
            return sum("CONFLATED" in p["quality"] for p in books) >= enough

        try:
            await wait_for(seen_enough, f"{enough} {'CONFLATED' if mode == 'auto' else 'book'} payloads", 60)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        (counter,) = await wait_for(lambda: _conflated_counter(http_port), f"{COUNTER} on /metrics")
        await ws.close()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    return books, counter, sorted(record_dir.glob("*.jsonl.zst"))


async def _replayed_books(files: list[Path], out: Path) -> list[dict[str, Any]]:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "flowgauge", "replay", *map(str, files), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    text = await asyncio.to_thread(out.read_text)
    lines = (orjson.loads(line)["payload"] for line in text.splitlines())
    return [p for p in lines if p.get("trigger") == "book"]


async def test_a_daemon_behind_conflates_and_every_conflated_payload_is_the_unconflated_one(tmp_path: Path) -> None:
    books, counter, files = await _run(tmp_path, "auto", enough=20)
    conflated = [p for p in books if "CONFLATED" in p["quality"]]
    assert len(conflated) >= 20
    assert counter >= len(conflated)  # each CONFLATED payload replaced at least one shed payload
    assert all(p["book_state"] == "VALID" for p in books)

    # The same frames, replayed without conflation (replay never conflates): every payload the daemon
    # published is the replay's payload for that book state, in the same order per book.
    replayed = await _replayed_books(files, tmp_path / "replay.jsonl")
    assert not any("CONFLATED" in p["quality"] for p in replayed)
    assert len(replayed) > len(books)  # states the daemon shed exist in the replay
    by_symbol: dict[str, list[dict[str, Any]]] = {}
    for p in replayed:
        by_symbol.setdefault(p["symbol"], []).append(p)
    cursor = dict.fromkeys(by_symbol, 0)
    compared = 0
    for live in books:
        candidates = by_symbol[live["symbol"]]
        i = cursor[live["symbol"]]
        while i < len(candidates) and candidates[i]["book_seq"] != live["book_seq"]:
            i += 1
        if i == len(candidates):
            break  # the recording ends before the daemon stopped publishing: nothing left to compare with
        assert _comparable(live) == _comparable(candidates[i]), live["book_seq"]
        cursor[live["symbol"]] = i + 1
        compared += 1
    assert compared >= len(books) - 5
    assert sum("CONFLATED" in p["quality"] for p in books[:compared]) >= 15


async def test_with_conflation_off_nothing_is_conflated(tmp_path: Path) -> None:
    books, counter, _ = await _run(tmp_path, "off", enough=150)
    assert not any("CONFLATED" in p["quality"] for p in books)
    assert counter == 0.0
