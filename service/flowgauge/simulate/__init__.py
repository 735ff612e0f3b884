"""Loopback venue simulators: one module per venue over shared server plumbing (`base`).

Each serves a recording over the venue's real websocket and REST protocol, looping with shifted sequence ids,
and can inject faults. The packaged sample recordings they serve by default live in `data/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

__all__ = ["DATA_DIR", "SIMULATORS", "SimulatorSpec"]

DATA_DIR = Path(__file__).resolve().parent / "data"


class SimulatorSpec(NamedTuple):
    """Where a venue's simulator lives, the port config/offline-demo.yaml expects it on, and its sample."""

    module: str
    default_port: int
    recording: str


SIMULATORS: dict[str, SimulatorSpec] = {
    "bybit": SimulatorSpec("flowgauge.simulate.bybit", 9780, "bybit-linear-2026-08.jsonl.zst"),
    "binanceusdm": SimulatorSpec("flowgauge.simulate.binanceusdm", 9781, "binance-usdm.jsonl.zst"),
    "okx": SimulatorSpec("flowgauge.simulate.okx", 9782, "okx-v5.jsonl.zst"),
    "deribit": SimulatorSpec("flowgauge.simulate.deribit", 9783, "deribit.jsonl.zst"),
    "hyperliquid": SimulatorSpec("flowgauge.simulate.hyperliquid", 9784, "hyperliquid-btc.jsonl.zst"),
}
