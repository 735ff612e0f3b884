"""Trade-flow imbalance `(B - S) / (B + S)` over sliding windows."""

from __future__ import annotations

import pytest

from flowgauge.metrics.trades import TradeFlowImbalance
from flowgauge.types import BUY, SELL

S = 1_000_000_000


def test_tfi_none_without_trades() -> None:
    assert TradeFlowImbalance(10 * S).value(5 * S) is None


def test_tfi_value_and_bounds() -> None:
    tfi = TradeFlowImbalance(10 * S)
    tfi.add(1 * S, BUY, 3.0)
    tfi.add(2 * S, SELL, 1.0)
    assert tfi.value(2 * S) == 0.5
    tfi.add(3 * S, BUY, 4.0)
    assert tfi.value(3 * S) == pytest.approx(6.0 / 8.0, abs=1e-15)


def test_tfi_all_sells_is_minus_one() -> None:
    tfi = TradeFlowImbalance(10 * S)
    tfi.add(0, SELL, 0.25)
    tfi.add(1, SELL, 2.0)
    assert tfi.value(1) == -1.0


def test_tfi_balanced_is_zero_not_none() -> None:
    tfi = TradeFlowImbalance(10 * S)
    tfi.add(0, BUY, 2.0)
    tfi.add(1, SELL, 2.0)
    assert tfi.value(1) == 0.0


def test_tfi_slides() -> None:
    short, long = TradeFlowImbalance(10 * S), TradeFlowImbalance(60 * S)
    for tfi in (short, long):
        tfi.add(0, BUY, 1.0)
        tfi.add(5 * S, SELL, 3.0)
    assert short.value(10 * S) == -1.0  # the buy at t=0 is exactly at t - h: out
    assert long.value(10 * S) == -0.5
    assert short.value(15 * S) is None
    assert long.value(59 * S) == -0.5
