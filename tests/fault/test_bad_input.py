"""Bad input from the venue: garbage frames and forced sequence gaps, injected by the simulator.

Timeline: simulator injects a malformed frame every 40 data frames and drops every 60th book delta
-> the daemon keeps running, counts bad frames, resyncs only the affected book (re-subscribe ->
fresh snapshot) and publishes only books that match the venue's sequence.
"""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import BYBIT_RECORDING
from tests.procs import flowgauge, free_port, http_get, wait_for, write_config
from websockets.asyncio.client import connect

pytestmark = pytest.mark.integration


async def _subscribe(bus_port: int):
    ws = await connect(f"ws://127.0.0.1:{bus_port}", open_timeout=2)
    await ws.send(orjson.dumps({"op": "subscribe", "patterns": ["flowgauge.v1.>"]}).decode())
    assert orjson.loads(await ws.recv())["op"] == "subscribed"
    return ws


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_garbage_and_gaps_are_survived_and_resynced(tmp_path: Path) -> None:
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    config = write_config(tmp_path / "cfg.yaml", sim_port, bus_port, http_port)
    sim_args = [
        "simulate",
        "--venue",
        "bybit",
        "--recording",
        str(BYBIT_RECORDING),
        "--port",
        str(sim_port),
        "--speed",
        "8",
        "--garbage-every",
        "40",
        "--gap-every",
        "60",
    ]
    with (
        flowgauge(sim_args, tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon,
    ):
        ws = await wait_for(lambda: _subscribe(bus_port), "embedded bus subscription")
        books: list[dict] = []
        statuses: list[dict] = []

        async def recovered_after_gap() -> bool:
            message = orjson.loads(await ws.recv())
            payload = message["payload"]
            if ".status." in message["topic"]:
                statuses.append(payload)
            elif payload.get("trigger") == "book":  # bars and aggregates have no trigger
                books.append(payload)
            reasons = [s["reason"] for s in statuses]
            gap_then_valid = "GAP" in reasons and statuses[-1]["state"] == "VALID"
            return gap_then_valid and "BAD_FRAME" in reasons

        await wait_for(recovered_after_gap, "a GAP and a BAD_FRAME resync followed by VALID", timeout_s=60)
        await ws.close()

        # Every published book was VALID and uncrossed, and its sequence ids only moved forward
        # within each snapshot epoch (a new epoch starts at each snapshot after a resync).
        last_seq: dict[str, int] = {}
        for payload in books:
            assert payload["book_state"] == "VALID"
            assert payload["bid_px"] < payload["ask_px"]
            previous = last_seq.get(payload["symbol"])
            if previous is not None and payload["ofi"] is not None:
                assert payload["book_seq"] == previous + 1
            last_seq[payload["symbol"]] = payload["book_seq"]

        _, text = await http_get(http_port, "/metrics")
        assert _counter(text, "flowgauge_bad_frames_total", venue="bybit") > 0
        assert _counter(text, "flowgauge_book_resyncs_total", venue="bybit", reason="gap") > 0
        assert daemon.poll() is None, "daemon died on bad input"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(5) == 0
