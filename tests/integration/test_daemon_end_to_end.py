"""The daemon and the Bybit simulator as real processes over real sockets.

Timeline: start the simulator (serving the recorded session, looping) -> start `flowgauge run`
pointed at it by config only -> a websocket subscriber on the embedded bus receives payloads for
both instruments -> /readyz turns 200 -> /metrics shows the signal gauges -> SIGTERM -> exit 0 in < 5 s.
"""

from __future__ import annotations

import signal
import subprocess
import time
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
    await ws.send(orjson.dumps({"op": "subscribe", "patterns": ["flowgauge.v1.bybit.>"]}).decode())
    reply = orjson.loads(await ws.recv())
    assert reply["op"] == "subscribed"
    return ws


async def test_simulator_and_daemon_end_to_end(tmp_path: Path) -> None:
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
        "4",
    ]
    with (
        flowgauge(sim_args, tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon,
    ):
        # Arrange: the bus accepts subscribers once the daemon listens.
        ws = await wait_for(lambda: _subscribe(bus_port), "embedded bus subscription")
        # Act: collect live payloads until both instruments have published valid books.
        seen: dict[str, dict] = {}

        async def both_books() -> bool:
            message = orjson.loads(await ws.recv())
            payload = message["payload"]
            if payload["trigger"] == "book" and payload["book_state"] == "VALID":
                seen[payload["symbol"]] = payload
            return {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= set(seen)

        await wait_for(both_books, "book payloads for BTC and ETH")
        await ws.close()
        btc = seen["BTC/USDT:USDT"]
        assert btc["venue"] == "bybit" and btc["instrument"] == "BTCUSDT"
        assert btc["bid_px"] < btc["ask_px"]
        assert -1 <= btc["depth_imb_10"] <= 1
        assert btc["ts_recv"] >= btc["ts_exchange"] - 5_000_000_000  # simulator shifts exchange time to now

        status, _ = await wait_for(lambda: _ready(http_port), "/readyz 200")
        assert status == 200

        # /metrics shows the signal gauges, parsed as Prometheus text.
        async def scraped() -> dict:
            code, text = await http_get(http_port, "/metrics")
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
            has_oi = any(name == "flowgauge_open_interest" for name, _ in samples)
            return samples if code == 200 and has_oi else {}

        samples = await wait_for(scraped, "open interest gauge on /metrics")
        key = ("flowgauge_depth_imbalance", (("levels", "10"), ("symbol", "BTC/USDT:USDT"), ("venue", "bybit")))
        assert key in samples and -1 <= samples[key] <= 1
        state_key = ("flowgauge_book_state", (("state", "VALID"), ("symbol", "BTC/USDT:USDT"), ("venue", "bybit")))
        assert samples[state_key] == 1
        assert samples[("flowgauge_ws_messages_total", (("venue", "bybit"),))] > 0
        oi = samples[("flowgauge_open_interest", (("symbol", "BTC/USDT:USDT"), ("venue", "bybit")))]
        assert 20_000 < oi < 40_000  # one-sided (~29.9k BTC), not Bybit's two-sided ~59.9k
        # The default family gauges (http.metrics_families: ofi_l1, microprice, risk), bounded, and no other family's.
        btc_labels = (("symbol", "BTC/USDT:USDT"), ("venue", "bybit"))
        ofi_l1_key = ("flowgauge_ofi_l1", (("symbol", "BTC/USDT:USDT"), ("venue", "bybit"), ("window", "10s")))

        async def family_gauges() -> dict:
            got = await scraped()
            return got if ofi_l1_key in got and ("flowgauge_risk_scale", btc_labels) in got else {}

        samples = await wait_for(family_gauges, "ofi_l1 and risk_scale gauges on /metrics")
        assert 0 < samples[("flowgauge_risk_scale", btc_labels)] <= 1
        defaults = {"flowgauge_ofi_l1", "flowgauge_micro_price", "flowgauge_micro_minus_mid_ratio",
                    "flowgauge_volatility_1m_per_sqrt_second", "flowgauge_micro_drift_ratio", "flowgauge_risk_scale",
                    "flowgauge_hedge_urgency"}  # fmt: skip
        btc_family = [name for name, labels in samples if name in defaults and ("symbol", "BTC/USDT:USDT") in labels]
        assert 2 <= len(btc_family) <= 10  # 10 at most per instrument (a null field has no series)
        assert not [name for name, _ in samples if name in ("flowgauge_flow_toxicity", "flowgauge_fragility_index")]

        code, body = await http_get(http_port, "/status")
        status_doc = orjson.loads(body)
        assert status_doc["venues"]["bybit"]["BTC/USDT:USDT"]["state"] == "VALID"

        # SIGTERM: exit 0 within 5 s.
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(5)
        except subprocess.TimeoutExpired:
            pytest.fail("daemon did not stop within 5 s of SIGTERM")
        assert code == 0, (tmp_path / "daemon.log").read_text()[-3000:]
        assert time.monotonic() - started < 5


async def _ready(http_port: int) -> tuple[int, str] | None:
    code, body = await http_get(http_port, "/readyz")
    return (code, body) if code == 200 else None
