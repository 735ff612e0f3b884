"""Published clock bars: the payload of a closed bar, empty bars, flags, out-of-sample z-scores."""

from __future__ import annotations

import math
import random

import pytest

from flowgauge.metrics.bar_feed import BAR_FIELDS, InstrumentBars

S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_bar_payload_fields_and_empty_bars() -> None:
    bars = InstrumentBars(1.0)
    assert bars.on_book(T0 + 1, None, 100.0, 100.2) == []
    bars.on_trade(T0 + 2, 1, 0.5)
    closed = bars.on_book(T0 + 2 * S + 1, 3.0, 100.1, 100.3)
    assert [tuple(b) for b in closed] == [BAR_FIELDS, BAR_FIELDS]
    first, empty = closed
    assert (first["t_start"], first["t_end"], first["bar_s"]) == (T0, T0 + S, 1.0)
    assert (first["n_events"], first["n_trades"], first["buy_volume"], first["ofi"]) == (1, 1, 0.5, 0.0)
    assert first["mid_close"] == 100.1 and first["spread_bps"] == pytest.approx(0.2 / 100.1 * 1e4)
    assert first["ret_bps"] is None  # no bar before it
    assert "PARTIAL_WINDOW" in first["quality"]  # the book was not VALID before its first state
    assert (empty["n_events"], empty["ofi"], empty["mid_open"], empty["mid_close"]) == (0, 0.0, 100.1, 100.1)
    assert empty["ret_bps"] == 0.0 and empty["quality"] == ["WARMUP"]


def test_invalid_bars_carry_the_reason() -> None:
    bars = InstrumentBars(1.0)
    bars.on_book(T0, None, 100.0, 100.2)
    closed = bars.on_book(T0 + S, 0.0, 100.0, 100.2)
    closed += bars.on_invalid(T0 + 2 * S + 5, gap=True)
    closed += bars.close_until(T0 + 4 * S)
    assert [b["quality"] for b in closed] == [
        ["PARTIAL_WINDOW", "WARMUP"],  # before the first state
        ["WARMUP"],
        ["GAP", "PARTIAL_WINDOW", "WARMUP"],  # the gap's bar
        ["GAP", "PARTIAL_WINDOW", "WARMUP"],  # still not VALID
    ]
    assert closed[3]["mid_close"] is None and closed[2]["ret_bps"] is None and closed[2]["spread_bps"] is None


def test_z_scores_are_out_of_sample_and_null_until_enough_bars() -> None:
    rng = random.Random(3)
    bars = InstrumentBars(1.0, z_half_life_s=50.0, z_min_samples=5)
    out = []
    mid = 100.0
    for k in range(300):
        mid *= math.exp(rng.gauss(0, 1e-4))
        out += bars.on_book(T0 + k * S, rng.gauss(0, 2.0), mid - 0.05, mid + 0.05)
    assert all(b["ofi_z"] is None for b in out[:5])
    assert all(b["ofi_z"] is not None for b in out[10:])
    # recompute the last bar's ofi_z from the bars before it (EW weights, H = 50 bars)
    a = math.exp(-math.log(2) / 50.0)
    xs = [b["ofi"] for b in out[1:-1]]  # the first bar is invalid (before the first state): not in the statistics
    n = len(xs)
    w = [(1 - a) * a ** (n - 1 - i) for i in range(n)]
    mean = math.fsum(wi * x for wi, x in zip(w, xs, strict=True)) / math.fsum(w)
    var = math.fsum(wi * (x - mean) ** 2 for wi, x in zip(w, xs, strict=True)) / math.fsum(w)
    assert out[-1]["ofi_z"] == pytest.approx((out[-1]["ofi"] - mean) / math.sqrt(var), rel=1e-9)
    assert "WARMUP" not in out[-1]["quality"]  # 300 bars > 4.3 half-lives of 50


def test_bar_interval_is_checked() -> None:
    with pytest.raises(ValueError):
        InstrumentBars(0.0)
    with pytest.raises(ValueError):
        InstrumentBars(math.inf)
