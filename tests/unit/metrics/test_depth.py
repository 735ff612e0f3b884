"""Book-state metrics on a hand-built L2Book: mid, spread, wmid, level imbalance, band depth and coverage."""

from __future__ import annotations

import pytest

from flowgauge.book.l2 import L2Book
from flowgauge.metrics.depth import band_depth, depth_imbalances, mid_price, spread_bps, weighted_mid

BIDS = [(100.0, 1.0), (99.9, 2.0), (99.5, 3.0), (99.0, 4.0)]
ASKS = [(100.1, 2.0), (100.2, 1.0), (100.6, 5.0), (101.0, 1.0)]
MID = (100.0 + 100.1) / 2


def make_book(bids: list[tuple[float, float]] = BIDS, asks: list[tuple[float, float]] = ASKS) -> L2Book:
    book = L2Book()
    book.load(bids, asks, seq=1, ts_exchange=0)
    return book


def test_mid_spread_wmid() -> None:
    assert mid_price(100.0, 100.1) == MID
    assert spread_bps(100.0, 100.1) == pytest.approx(0.1 / MID * 1e4, abs=1e-9)
    # I = 1 / (1 + 2) -> wmid = ask/3 + 2*bid/3: closer to the bid because the ask queue is larger
    assert weighted_mid(100.0, 1.0, 100.1, 2.0) == pytest.approx(100.0 + 0.1 / 3, abs=1e-12)


def test_state_metrics_undefined_with_an_empty_side() -> None:
    assert mid_price(None, 100.1) is None
    assert spread_bps(100.0, None) is None
    assert weighted_mid(None, None, 100.1, 2.0) is None


def test_depth_imbalance_levels() -> None:
    values, empty = depth_imbalances(make_book(), (1, 5, 10, 20))
    assert not empty
    assert values[0] == pytest.approx((1.0 - 2.0) / 3.0, abs=1e-15)
    # 5, 10, 20 levels all cover the whole 4-level book: bids 10, asks 9
    assert values[1:] == [pytest.approx(1.0 / 19.0, abs=1e-15)] * 3


def test_depth_imbalance_two_levels() -> None:
    values, _ = depth_imbalances(make_book(), (2,))
    assert values == [pytest.approx((3.0 - 3.0) / 6.0, abs=1e-15)]


def test_depth_imbalance_one_side_empty_is_plus_minus_one_and_flagged() -> None:
    values, empty = depth_imbalances(make_book(asks=[]), (1, 5))
    assert empty
    assert values == [1.0, 1.0]
    values, empty = depth_imbalances(make_book(bids=[]), (1,))
    assert empty
    assert values == [-1.0]


def test_depth_imbalance_both_sides_empty_is_none() -> None:
    values, empty = depth_imbalances(make_book(bids=[], asks=[]), (1, 5))
    assert values == [None, None]
    assert not empty


def test_band_depth_10_and_25_bps() -> None:
    book = make_book()
    # 10 bps: bid edge 100.05 * 0.999 = 99.94995 -> only 100.0; ask edge 100.15005 -> only 100.1
    bid, ask, bid_short, ask_short = band_depth(book, MID, 10.0)
    assert bid == pytest.approx(100.0 * 1.0, abs=1e-9)
    assert ask == pytest.approx(100.1 * 2.0, abs=1e-9)
    assert not bid_short and not ask_short
    # 25 bps: bid edge 99.799875 -> 100.0, 99.9; ask edge 100.300125 -> 100.1, 100.2
    bid, ask, bid_short, ask_short = band_depth(book, MID, 25.0)
    assert bid == pytest.approx(100.0 + 99.9 * 2.0, abs=1e-9)
    assert ask == pytest.approx(100.1 * 2.0 + 100.2, abs=1e-9)
    assert not bid_short and not ask_short


def test_band_wider_than_the_book_is_exhausted_on_that_side_only() -> None:
    """100 bps: ask edge 101.0505 is beyond the deepest ask 101.0, so the feed may have truncated it; the bids
    reach 99.0, past their edge 99.0495."""
    bid, ask, bid_short, ask_short = band_depth(make_book(), MID, 100.0)
    assert ask_short and not bid_short
    assert ask == pytest.approx(100.1 * 2 + 100.2 + 100.6 * 5 + 101.0, abs=1e-9)
    assert bid == pytest.approx(100.0 + 99.9 * 2 + 99.5 * 3, abs=1e-9)  # 99.0 < 99.0495: outside


def test_band_depth_counts_a_level_inside_after_an_update() -> None:
    book = make_book()
    book.apply([(99.95, 10.0)], [], seq=2, ts_exchange=1)
    bid, _, _, _ = band_depth(book, MID, 10.0)
    assert bid == pytest.approx(100.0 + 99.95 * 10.0, abs=1e-9)
