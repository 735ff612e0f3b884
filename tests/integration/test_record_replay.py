"""`flowgauge run --record DIR` writes the shared recording format; `flowgauge replay` reads it back.

Timeline: simulator -> daemon recording raw frames -> payloads seen live -> SIGTERM (recorder
flushed) -> replay the recorded files -> book payloads for both instruments, one per book message.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from tests.conftest import BYBIT_RECORDING
from tests.procs import flowgauge, free_port, http_get, wait_for, write_config

from flowgauge.recording import Connect, Http, Recv, iter_records

pytestmark = pytest.mark.integration


async def test_recorded_session_replays(tmp_path: Path) -> None:
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    config = write_config(tmp_path / "cfg.yaml", sim_port, bus_port, http_port)
    record_dir = tmp_path / "rec"
    sim_args = [
        "simulate",
        "--venue",
        "bybit",
        "--recording",
        str(BYBIT_RECORDING),
        "--port",
        str(sim_port),
        "--speed",
        "4",
    ]
    with (
        flowgauge(sim_args, tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config), "--record", str(record_dir)], tmp_path / "daemon.log") as daemon,
    ):

        async def published_enough() -> bool:
            code, body = await http_get(http_port, "/status")
            if code != 200:
                return False
            books = orjson.loads(body)["venues"].get("bybit", {})
            return len(books) == 2 and all(b["published"] >= 50 for b in books.values())

        await wait_for(published_enough, "50 payloads per instrument")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(5) == 0

    files = sorted(record_dir.glob("*.jsonl.zst"))
    assert files, "no recording written"
    records = [r for f in files for r in iter_records(f)]
    assert any(isinstance(r, Http) and "instruments-info" in r.url for r in records)
    assert any(isinstance(r, Connect) and r.addr.endswith("/v5/public/linear") for r in records)
    book_frames = [r for r in records if isinstance(r, Recv) and '"topic":"orderbook.200.' in r.data]
    assert book_frames
    # The best-quote stream (orderbook.1) was recorded too, and replays into the L1 fields only.
    assert any(isinstance(r, Recv) and '"topic":"orderbook.1.' in r.data for r in records)

    out = tmp_path / "out.jsonl"
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "flowgauge", "replay", *map(str, files), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in out.read_text().splitlines()]
    book_payloads = [m for m in lines if m["payload"].get("trigger") == "book"]
    assert {m["payload"]["symbol"] for m in book_payloads} == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    # One payload per applied book message: every recorded book frame was applied (none lost).
    assert len(book_payloads) == len(book_frames)
