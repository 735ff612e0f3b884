"""Fragility metrics of one book state (metrics.md §7): hand-computed vectors, ranges, and both books alike."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowgauge.book.l2 import L2Book
from flowgauge.core import COMPILED, new_book
from flowgauge.metrics.fragility import book_slope, impact_costs, ofi_stress


def _book(bids: list[tuple[float, float]], asks: list[tuple[float, float]], core: str = "python") -> L2Book:
    book = new_book(core) if core != "python" else L2Book()
    book.load(bids, asks, 1, 0)
    return book


def test_impact_cost_vector() -> None:
    # asks: 100.5 x 10 (1005 notional), 101 x 100 (10100); mid 100.25
    book = _book([(100.0, 50.0)], [(100.5, 10.0), (101.0, 100.0)])
    mid = 100.25
    costs, exhausted, _ = impact_costs(book.asks, mid, (500.0, 5000.0, 100_000.0), buy=True)
    # $500 fills inside the first level: VWAP 100.5
    assert costs[0] == pytest.approx((100.5 - mid) / mid * 1e4)
    # $5000: 1005 at 100.5 (10 base) + 3995 at 101 (39.5545 base)
    base = 10.0 + 3995.0 / 101.0
    assert costs[1] == pytest.approx((5000.0 / base - mid) / mid * 1e4, rel=1e-12)
    assert costs[2] is None and exhausted  # the visible asks hold 11,105 of notional
    sell, exhausted, _ = impact_costs(book.bids, mid, (1000.0,), buy=False)
    assert sell[0] == pytest.approx((mid - 100.0) / mid * 1e4)
    assert not exhausted


def test_impact_cost_exactly_the_visible_book_is_filled() -> None:
    book = _book([(99.0, 1.0)], [(101.0, 1.0)])
    costs, exhausted, _ = impact_costs(book.asks, 100.0, (101.0,), buy=True)
    assert costs[0] == pytest.approx(100.0) and not exhausted


def test_impact_cost_grows_with_notional_and_walks_many_levels() -> None:
    asks = [(100.0 + 0.01 * i, 1.0) for i in range(1, 2001)]
    bids = [(100.0 - 0.01 * i, 1.0) for i in range(1, 2001)]
    book = _book(bids, asks)
    costs, exhausted, _ = impact_costs(book.asks, 100.0, (10_000.0, 100_000.0, 180_000.0), buy=True)
    assert not exhausted
    assert all(c is not None for c in costs)
    assert costs[0] < costs[1] < costs[2]  # type: ignore[operator]
    assert costs[0] > 0.0


def test_impact_cost_of_an_empty_side_is_none() -> None:
    book = _book([(99.0, 1.0)], [])
    costs, exhausted, _ = impact_costs(book.asks, 100.0, (1.0,), buy=True)
    assert costs == [None] and exhausted


def test_book_slope_vector() -> None:
    # bids: 99 x 2, 98 x 3 ; mid 100. v1 = 2, v2 = 5
    book = _book([(99.0, 2.0), (98.0, 3.0)], [(101.0, 1.0)])
    slope, short = book_slope(book.bids, 100.0, 2)
    first = 2.0 / abs(99.0 / 100.0 - 1.0)
    second = (5.0 / 2.0 - 1.0) / abs(98.0 / 99.0 - 1.0)
    assert slope == pytest.approx((first + second) / 2, rel=1e-12)
    assert not short
    slope1, short1 = book_slope(book.asks, 100.0, 10)
    assert slope1 == pytest.approx(1.0 / 0.01) and short1
    assert book_slope(_book([], [(101.0, 1.0)]).bids, 100.0, 10) == (None, True)


def test_ofi_stress() -> None:
    assert ofi_stress(-2.0, 100.0, 300.0, 100.0) == pytest.approx(0.5)
    assert ofi_stress(None, 100.0, 1.0, 1.0) is None
    assert ofi_stress(1.0, None, 1.0, 1.0) is None
    assert ofi_stress(1.0, 100.0, 0.0, 0.0) is None


def test_both_books_give_the_same_bits() -> None:
    import random

    rng = random.Random(9)
    bids = [(round(100.0 - 0.1 * i, 1), rng.uniform(0.01, 5.0)) for i in range(1, 300)]
    asks = [(round(100.0 + 0.1 * i, 1), rng.uniform(0.01, 5.0)) for i in range(1, 300)]
    py, c = _book(bids, asks), _book(bids, asks, COMPILED)
    mid = (bids[0][0] + asks[0][0]) / 2
    for buy in (True, False):
        a = impact_costs(py.asks if buy else py.bids, mid, (10_000.0, 100_000.0, 1e6), buy)
        b = impact_costs(c.asks if buy else c.bids, mid, (10_000.0, 100_000.0, 1e6), buy)
        assert a == impact_costs(py.asks if buy else py.bids, mid, (10_000.0, 100_000.0, 1e6), buy, hint=3)
        assert a == b
    assert book_slope(py.bids, mid, 10) == book_slope(c.bids, mid, 10)
    assert math.isfinite(book_slope(py.asks, mid, 10)[0])  # type: ignore[arg-type]


levels = st.lists(
    st.tuples(st.integers(1, 400), st.floats(0.001, 1000.0, allow_nan=False, allow_infinity=False)),
    min_size=1, max_size=40, unique_by=lambda level: level[0],
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(levels, levels, st.lists(st.floats(1.0, 1e7), min_size=1, max_size=4))
def test_costs_are_at_least_the_half_spread_and_grow_with_size(bid_ticks, ask_ticks, sizes) -> None:  # type: ignore[no-untyped-def]
    """Every cost is at least the half-spread, a larger order never costs less (to rounding), a null cost is exactly
    an exhausted side, and a slope is positive. (Neither measure is mirror-symmetric: an order of N quote buys less
    base on the dearer side, and the slope's price ratios p_{t+1}/p_t differ below and above the mid.)"""
    mid = 1000.0
    tick = 0.5
    bids = [(mid - tick * k, q) for k, q in bid_ticks]
    asks = [(mid + tick * k, q) for k, q in ask_ticks]
    book = _book(bids, asks)
    notionals = sorted(sizes)
    for side, buy, best_ticks in ((book.asks, True, ask_ticks), (book.bids, False, bid_ticks)):
        costs, exhausted, _ = impact_costs(side, mid, notionals, buy)
        half_spread_bps = tick * min(k for k, _ in best_ticks) / mid * 1e4
        filled = [c for c in costs if c is not None]
        assert all(c >= half_spread_bps * (1 - 1e-12) for c in filled)
        assert all(b >= a * (1 - 1e-12) for a, b in itertools.pairwise(filled))  # up to rounding
        assert exhausted == (len(filled) < len(costs))
    slope, _ = book_slope(book.asks, mid, 10)
    assert slope is not None and slope > 0.0
