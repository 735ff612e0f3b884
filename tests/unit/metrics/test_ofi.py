"""CKS per-event OFI `e_n`: the metrics.md §1.5 hand-computed vector, its invariants, and §1.4 empty sides."""

from __future__ import annotations

import itertools
import random

import pytest

from flowgauge.book.l2 import L2Book
from flowgauge.metrics.ofi import (
    EMPTY_ASK_PX,
    EMPTY_BID_PX,
    TopOfBook,
    mirror,
    ofi_event,
    ofi_event_ccz,
    top_of_book,
)

# metrics.md §1.5, tick 0.1. S0: bid 100.0x5, ask 100.1x3.
S0: TopOfBook = (100.0, 5.0, 100.1, 3.0)
VECTOR: list[tuple[str, TopOfBook, float, float]] = [
    # step, new state, e_n (CKS), e_n (ccz_printed)
    ("S1 bid 100.0x7", (100.0, 7.0, 100.1, 3.0), 2.0, 2.0),
    ("S2 buy MO 2 hits ask", (100.0, 7.0, 100.1, 1.0), 2.0, 2.0),
    ("S3 100.1 emptied, ask 100.2x4", (100.0, 7.0, 100.2, 4.0), 1.0, 4.0),
    ("S4 new inside bid 100.1x2", (100.1, 2.0, 100.2, 4.0), 2.0, 2.0),
    ("S5 inside bid cancelled", (100.0, 7.0, 100.2, 4.0), -2.0, -7.0),
    ("S6 new inside ask 100.1x5", (100.0, 7.0, 100.1, 5.0), -5.0, -5.0),
]


def states() -> list[TopOfBook]:
    return [S0] + [state for _, state, _, _ in VECTOR]


@pytest.mark.parametrize(("index", "step"), list(enumerate(VECTOR)), ids=[s[0] for s in VECTOR])
def test_hand_computed_vector_each_step(index: int, step: tuple[str, TopOfBook, float, float]) -> None:
    _, new, cks, ccz = step
    prev = states()[index]
    assert ofi_event(prev, new) == cks
    assert ofi_event_ccz(prev, new) == ccz


def test_hand_computed_vector_total_is_zero_and_mid_unchanged() -> None:
    seq = states()
    events = [ofi_event(a, b) for a, b in itertools.pairwise(seq)]
    assert events == [2.0, 2.0, 1.0, 2.0, -2.0, -5.0]
    assert sum(events) == 0.0
    first, last = seq[0], seq[-1]
    assert (first[0] + first[2]) / 2 == (last[0] + last[2]) / 2  # ΔP = 0 ticks


def test_additivity_over_split_interval() -> None:
    """OFI[t0,t2] = OFI[t0,t1] + OFI[t1,t2] when there is no reset at t1, for every split point."""
    seq = states()
    events = [ofi_event(a, b) for a, b in itertools.pairwise(seq)]
    total = sum(events)
    for split in range(len(events) + 1):
        assert sum(events[:split]) + sum(events[split:]) == total
    # and the first half of the vector on its own: +2 +2 +1 = 5, the second: +2 -2 -5 = -5
    assert sum(events[:3]) == 5.0
    assert sum(events[3:]) == -5.0


def _random_tops(rng: random.Random, n: int) -> list[TopOfBook]:
    tops: list[TopOfBook] = []
    for _ in range(n):
        bid_empty = rng.random() < 0.1
        ask_empty = rng.random() < 0.1
        bid_px = EMPTY_BID_PX if bid_empty else 100.0 + rng.randint(-3, 3) * 0.1
        ask_px = EMPTY_ASK_PX if ask_empty else 100.7 + rng.randint(-3, 3) * 0.1
        bid_sz = 0.0 if bid_empty else rng.choice([0.001, 0.5, 1.25, 3.0, 7.123])
        ask_sz = 0.0 if ask_empty else rng.choice([0.002, 0.75, 2.0, 4.5, 9.87])
        tops.append((bid_px, bid_sz, ask_px, ask_sz))
    return tops


def test_mirror_symmetry_negates_every_event_exactly() -> None:
    seq = states()
    for prev, new in itertools.pairwise(seq):
        assert ofi_event(mirror(prev), mirror(new)) == -ofi_event(prev, new)
    tops = _random_tops(random.Random(7), 400)
    nonzero = 0
    for prev, new in itertools.pairwise(tops):
        e = ofi_event(prev, new)
        nonzero += e != 0.0
        assert ofi_event(mirror(prev), mirror(new)) == -e
    assert nonzero > 300  # the random walk really exercised the branches


def test_mirror_of_empty_side_is_the_other_empty_side() -> None:
    assert mirror((EMPTY_BID_PX, 0.0, 100.0, 2.0)) == (-100.0, 2.0, EMPTY_ASK_PX, 0.0)


@pytest.mark.parametrize("x", [0.001, 1.0, 2.5, 4.999])
def test_pure_cancel_at_unchanged_best_bid_is_minus_x(x: float) -> None:
    prev = (100.0, 5.0, 100.1, 3.0)
    new = (100.0, 5.0 - x, 100.1, 3.0)
    assert ofi_event(prev, new) == pytest.approx(-x, abs=1e-12)


def test_pure_cancel_at_unchanged_best_ask_is_plus_x() -> None:
    assert ofi_event((100.0, 5.0, 100.1, 3.0), (100.0, 5.0, 100.1, 1.0)) == 2.0


def test_same_price_size_change_is_not_dropped() -> None:
    """The strict-inequality pitfall of §1.1 would give 0 here."""
    assert ofi_event((100.0, 5.0, 100.1, 3.0), (100.0, 9.0, 100.1, 3.0)) == 4.0


def test_no_change_is_zero() -> None:
    assert ofi_event(S0, S0) == 0.0


# -- §1.4 empty sides ---------------------------------------------------------------------------------------


def test_empty_bid_side_disappearance_and_reappearance() -> None:
    full = (100.0, 5.0, 100.1, 3.0)
    no_bids = (EMPTY_BID_PX, 0.0, 100.1, 3.0)
    assert ofi_event(full, no_bids) == -5.0  # retreat: the old queue left
    assert ofi_event(no_bids, (99.8, 2.0, 100.1, 3.0)) == 2.0  # improvement: the new queue arrived
    assert ofi_event(no_bids, no_bids) == 0.0


def test_empty_ask_side_disappearance_and_reappearance() -> None:
    full = (100.0, 5.0, 100.1, 3.0)
    no_asks = (100.0, 5.0, EMPTY_ASK_PX, 0.0)
    assert ofi_event(full, no_asks) == 3.0
    assert ofi_event(no_asks, (100.0, 5.0, 100.4, 6.0)) == -6.0
    assert ofi_event(no_asks, no_asks) == 0.0


def test_both_sides_empty_then_book_appears() -> None:
    empty = (EMPTY_BID_PX, 0.0, EMPTY_ASK_PX, 0.0)
    assert ofi_event(empty, empty) == 0.0
    assert ofi_event(empty, (100.0, 5.0, 100.1, 3.0)) == 5.0 - 3.0


def test_top_of_book_uses_infinite_prices_for_empty_sides() -> None:
    book = L2Book()
    book.load([], [(100.1, 3.0), (100.2, 1.0)], seq=1, ts_exchange=0)
    assert top_of_book(book) == (EMPTY_BID_PX, 0.0, 100.1, 3.0)
    book.load([(100.0, 5.0), (99.9, 1.0)], [], seq=2, ts_exchange=0)
    assert top_of_book(book) == (100.0, 5.0, EMPTY_ASK_PX, 0.0)


def test_zero_size_at_best_is_a_retreat_via_the_book() -> None:
    """§1.4: a zero-size level at best is removed; the new best is the next level (a price retreat)."""
    book = L2Book()
    book.load([(100.0, 5.0), (99.9, 4.0)], [(100.1, 3.0)], seq=1, ts_exchange=0)
    before = top_of_book(book)
    book.apply([(100.0, 0.0)], [], seq=2, ts_exchange=1)
    after = top_of_book(book)
    assert after == (99.9, 4.0, 100.1, 3.0)
    assert ofi_event(before, after) == -5.0
