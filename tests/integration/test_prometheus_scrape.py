"""A real Prometheus server scrapes the daemon's /metrics.

Timeline: simulator (Bybit) -> daemon -> a Prometheus server (Debian's `prometheus`, installed by
tools/test.sh) started on a free loopback port with a 1 s scrape of the daemon -> its HTTP API reports
the target up and returns the depth-imbalance, open-interest and book-state series -> everything stops.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
import yaml
from tests.conftest import BYBIT_RECORDING
from tests.procs import flowgauge, free_port, http_get, process, wait_for, write_config

pytestmark = pytest.mark.integration


async def _query(port: int, promql: str) -> list[dict]:
    from urllib.parse import quote

    code, body = await http_get(port, f"/api/v1/query?query={quote(promql)}")
    if code != 200:
        return []
    doc = orjson.loads(body)
    return doc["data"]["result"] if doc.get("status") == "success" else []


async def test_prometheus_scrapes_the_signal_gauges(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "the prometheus binary is required (tools/test.sh installs Debian's package)"
    sim_port, bus_port, http_port, prom_port = free_port(), free_port(), free_port(), free_port()
    config = write_config(tmp_path / "cfg.yaml", sim_port, bus_port, http_port)
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
                "scrape_configs": [
                    {"job_name": "flowgauge", "static_configs": [{"targets": [f"127.0.0.1:{http_port}"]}]}
                ],
            }
        )
    )
    sim_args = ["simulate", "--venue", "bybit", "--recording", str(BYBIT_RECORDING), "--port", str(sim_port)]
    prom_args = [
        prometheus,
        f"--config.file={prom_config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ]
    with (
        flowgauge(sim_args, tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log"),
        process(prom_args, tmp_path / "prometheus.log"),
    ):

        async def scraped_up() -> bool:
            result = await _query(prom_port, 'up{job="flowgauge"}')
            return bool(result) and result[0]["value"][1] == "1"

        await wait_for(scraped_up, "Prometheus to scrape the daemon successfully", timeout_s=60)

        async def depth_series() -> list[dict]:
            return await _query(prom_port, 'flowgauge_depth_imbalance{venue="bybit",levels="10"}')

        series = await wait_for(depth_series, "depth imbalance series in Prometheus", timeout_s=60)
        symbols = {s["metric"]["symbol"] for s in series}
        assert symbols == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
        assert all(-1 <= float(s["value"][1]) <= 1 for s in series)
        oi = await wait_for(
            lambda: _query(prom_port, 'flowgauge_open_interest{venue="bybit",symbol="BTC/USDT:USDT"}'),
            "open interest in Prometheus",
        )
        assert 20_000 < float(oi[0]["value"][1]) < 40_000  # one-sided
        states = await _query(prom_port, 'flowgauge_book_state{venue="bybit"}')
        assert {float(s["value"][1]) for s in states} <= {0.0, 1.0} and states
        assert {s["metric"]["state"] for s in states} == {"VALID", "SYNCING", "INVALID"}
