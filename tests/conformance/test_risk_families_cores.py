"""The fragility, ew and risk families and the clock bars on every recording: both cores publish the same bytes,
the families' fields are filled (not all null), and the bars topic carries closed bars, empty ones included."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from flowgauge import core
from flowgauge.metrics.bar_feed import BarSpec
from flowgauge.metrics.families import FAMILIES
from flowgauge.replay.replay import replay

REPO = Path(__file__).resolve().parents[2]
RECORDINGS = sorted(
    [*REPO.glob("tests/fixtures/**/*.jsonl.zst"), *REPO.glob("service/flowgauge/simulate/data/*.jsonl.zst")]
)
MINE = ("fragility", "ew", "risk")


@pytest.fixture(scope="module", autouse=True)
def hot_core() -> Iterator[str]:
    """This module drives both cores itself (overrides the suite's per-core parametrisation)."""
    previous = core.active_core()
    yield previous
    core.select(previous)


def _replayed(path: Path, core_name: str) -> list[tuple[str, bytes]]:
    core.select(core_name)
    out: list[tuple[str, bytes]] = []
    engine, _ = replay([path], lambda t, p: out.append((t, p)), clock=lambda: 0, families=("core", *MINE),
                       bars=BarSpec(1.0))  # fmt: skip
    assert engine.core == core_name
    return out


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_both_cores_publish_the_same_family_fields_and_bars(path: Path) -> None:
    reference = _replayed(path, core.PYTHON)
    compiled = _replayed(path, core.COMPILED)
    assert len(compiled) == len(reference)
    for n, (ours, theirs) in enumerate(zip(compiled, reference, strict=True)):
        assert ours == theirs, f"{path.name} message {n} differs"
    books = [orjson.loads(p) for t, p in reference if t.count(".") == 3 and b'"trigger":"book"' in p]
    assert books, f"{path.name}: no book payload"
    filled = {key for p in books for family in MINE for key in FAMILIES[family] if p.get(key) is not None}
    # Every recording fills the per-state fields (the slow ones need more time than some recordings hold) ...
    assert {"book_slope", "spread_bps_ew_60s", "risk_scale"} <= filled
    if any((p["depth_bid_10bps"] or 0.0) + (p["depth_ask_10bps"] or 0.0) > 0.0 for p in books):
        assert "ofi_stress_10s" in filled
    # ... and an impact cost is null only where the visible book cannot fill the order (the Deribit options of the
    # simulator's recording are quoted in BTC: no side holds 10,000 of it).
    for p in books:
        if p["mid"] is not None:
            for key in FAMILIES["fragility"][:6]:
                assert (p[key] is None) == (p["coverage"].get(key) == "EXHAUSTED"), key
    bars = [orjson.loads(p) for t, p in reference if t.startswith("flowgauge.v1.bars.")]
    assert bars, f"{path.name}: no bar"
    for symbol in {b["symbol"] for b in bars}:
        starts = [b["t_start"] for b in bars if b["symbol"] == symbol]
        step = round(bars[0]["bar_s"] * 1e9)
        assert all(b - a == step for a, b in itertools.pairwise(starts)), "a bar is missing"
