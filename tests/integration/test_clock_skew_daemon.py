"""The daemon measures a venue's clock offset and flags CLOCK_SKEW (issue 10, item 3).

Timeline: `flowgauge simulate --venue bybit --clock-skew S` serves Bybit with its exchange clock S seconds ahead of
the wall clock -> `flowgauge run` tracks it -> /metrics shows `flowgauge_venue_clock_offset_seconds{venue="bybit"}`
near -S (ts_recv - ts_exchange) and the book payloads on the bus carry CLOCK_SKEW. With no skew the offset is near 0
and no payload is flagged. Both are real processes; the only link is configuration.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.procs import flowgauge, free_port, http_get, wait_for, write_config
from websockets.asyncio.client import ClientConnection, connect

pytestmark = pytest.mark.integration

OFFSET_RE = re.compile(r'^flowgauge_venue_clock_offset_seconds\{venue="bybit"\} (\S+)$', re.MULTILINE)
AFTER_ESTIMATE = 150  # book payloads read once the estimate exists


async def _offset(http_port: int) -> float | None:
    code, text = await http_get(http_port, "/metrics")
    if code != 200:
        return None
    found = OFFSET_RE.search(text)
    return float(found.group(1)) if found else None


async def _subscribe(bus_port: int) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{bus_port}", open_timeout=2)
    await ws.send(orjson.dumps({"op": "subscribe", "patterns": ["flowgauge.v1.bybit.>"]}).decode())
    assert orjson.loads(await ws.recv())["op"] == "subscribed"
    return ws


async def _book_payloads(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next `count` live VALID book payloads (current values sent on subscribe are skipped)."""
    out: list[dict[str, Any]] = []

    async def enough() -> bool:
        message = orjson.loads(await ws.recv())
        payload = message["payload"]
        if not message.get("snapshot") and payload.get("trigger") == "book" and payload["book_state"] == "VALID":
            out.append(payload)
        return len(out) >= count

    await wait_for(enough, f"{count} book payloads", timeout_s=60)
    return out


@pytest.mark.parametrize("skew_s", [5.0, 0.0])
async def test_daemon_reports_the_venue_clock_offset_and_flags_skew(tmp_path: Path, skew_s: float) -> None:
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    config = write_config(tmp_path / "skew.yaml", sim_port, bus_port, http_port)
    simulate = ["simulate", "--venue", "bybit", "--port", str(sim_port), "--speed", "4", "--clock-skew", str(skew_s)]
    with (
        flowgauge(simulate, tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log"),
    ):
        offset = await wait_for(lambda: _offset(http_port), "flowgauge_venue_clock_offset_seconds", timeout_s=60)
        # Subscribed once the estimate exists, so every payload read was published after it.
        ws = await wait_for(lambda: _subscribe(bus_port), "embedded bus subscription")
        try:
            payloads = await _book_payloads(ws, AFTER_ESTIMATE)
        finally:
            await ws.close()
        later = await _offset(http_port)
    assert later is not None
    for value in (offset, later):
        assert abs(value + skew_s) < 1.0, f"offset {value:+.3f} s with the venue clock {skew_s:+g} s off"
    lags = sorted((p["ts_exchange"] - p["ts_recv"]) / 1e9 for p in payloads)
    assert abs(lags[len(lags) // 2] - skew_s) < 1.0  # what the payloads carry agrees with the metric
    flagged = [p for p in payloads if "CLOCK_SKEW" in p["quality"]]
    if skew_s:
        # The estimate was already beyond the 2 s bound when these were read: every one is flagged.
        assert len(flagged) == len(payloads), f"{len(flagged)} of {len(payloads)} flagged"
    else:
        assert flagged == []
