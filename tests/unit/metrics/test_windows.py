"""Exact sums, sliding windows on exchange time (half-open edges), decayed sums (half-life semantics)."""

from __future__ import annotations

import math
import random

import pytest

from flowgauge.metrics.windows import DecayedSum, ExactSum, SlidingFlow, SlidingSum

S = 1_000_000_000


# -- ExactSum ------------------------------------------------------------------------------------------------


def test_exact_sum_survives_catastrophic_cancellation() -> None:
    acc = ExactSum()
    for x in (1e16, 1.0, -1e16):
        acc.add(x)
    assert acc.value() == 1.0  # a plain float running sum gives 0.0 here
    plain = 0.0
    for x in (1e16, 1.0, -1e16):
        plain += x
    assert plain == 0.0


def test_exact_sum_add_then_remove_returns_exactly_to_the_rest() -> None:
    rng = random.Random(3)
    keep = [rng.uniform(-5, 5) for _ in range(50)]
    transient = [rng.uniform(-1e6, 1e6) for _ in range(200)]
    acc = ExactSum()
    for x in keep + transient:
        acc.add(x)
    for x in transient:
        acc.sub(x)
    assert acc.value() == math.fsum(keep)


def test_exact_sum_of_sums() -> None:
    a, b = ExactSum(), ExactSum()
    for x in (0.1, 0.2, 0.3):
        a.add(x)
    for x in (1e-20, 5.0):
        b.add(x)
    a.add_sum(b)
    assert a.value() == math.fsum([0.1, 0.2, 0.3, 1e-20, 5.0])
    a.sub_sum(b)
    assert a.value() == math.fsum([0.1, 0.2, 0.3])


# -- SlidingSum ----------------------------------------------------------------------------------------------


def test_sliding_window_is_half_open() -> None:
    """(t - h, t]: an item at exactly t - h is out, an item at exactly t is in."""
    win = SlidingSum(10 * S)
    win.add(0, 2.5)
    assert win.value(0) == 2.5  # right edge included
    assert win.value(10 * S - 1) == 2.5  # one ns before the boundary: still inside
    assert win.value(10 * S) == 0.0  # t_i = t - h: excluded
    assert len(win) == 0


def test_sliding_window_boundary_between_two_items() -> None:
    win = SlidingSum(1 * S)
    win.add(100, 1.0)
    win.add(100 + S // 2, 2.0)
    assert win.value(100 + S // 2) == 3.0
    assert win.value(100 + S) == 2.0  # first item exactly at t - h
    assert win.value(100 + S // 2 + S - 1) == 2.0
    assert win.value(100 + S // 2 + S) == 0.0


def test_sliding_window_never_goes_backwards() -> None:
    win = SlidingSum(10 * S)
    win.add(0, 1.0)
    assert win.value(20 * S) == 0.0
    # an older query is answered at the latest time seen, not resurrected
    assert win.value(5 * S) == 0.0


def test_sliding_window_late_items() -> None:
    win = SlidingSum(10 * S)
    win.add(5 * S, 1.0)
    win.add(3 * S, 2.0)  # late but inside (now=5s, window (-5s, 5s])
    assert win.value(5 * S) == 3.0
    assert win.value(13 * S) == 1.0  # the late item slid out first: it was inserted in time order
    win.add(2 * S, 4.0)  # older than the window at the latest time: dropped and counted
    assert win.late_dropped == 1
    assert win.value(13 * S) == 1.0


def test_sliding_sum_is_bit_identical_to_fsum_of_window_contents() -> None:
    """No drift: after thousands of adds and evictions the value is the correctly rounded window sum."""
    rng = random.Random(11)
    h = 2 * S
    win = SlidingSum(h)
    items: list[tuple[int, float]] = []
    t = 0
    for i in range(5000):
        t += rng.randint(1, 3_000_000)
        x = rng.choice([0.1, -0.3, 1e-3, 12345.678, -7.77, 0.2]) * rng.choice([1.0, 3.0])
        win.add(t, x)
        items.append((t, x))
        if i % 97 == 0:
            expected = math.fsum(v for ti, v in items if t - h < ti <= t)
            assert win.value(t) == expected


def test_sliding_sum_independent_of_query_pattern() -> None:
    rng = random.Random(5)
    events = [(i * 37_000_000, rng.uniform(-3, 3)) for i in range(600)]
    queried, quiet = SlidingSum(1 * S), SlidingSum(1 * S)
    for t, x in events:
        queried.add(t, x)
        queried.value(t)
        quiet.add(t, x)
    end = events[-1][0]
    assert queried.value(end) == quiet.value(end)


def test_sliding_sum_cap_evicts_oldest_and_counts() -> None:
    win = SlidingSum(10 * S, max_items=3)
    for i, x in enumerate((1.0, 2.0, 4.0, 8.0)):
        win.add(i, x)
    assert win.overflow_dropped == 1
    assert win.value(3) == 14.0
    flow = SlidingFlow(10 * S, max_items=2)
    for i in range(3):
        flow.add(i, 1.0, 1.0)
    assert flow.overflow_dropped == 1
    assert flow.evaluate(2) == (2.0, 2.0, 2)


def test_sliding_flow_pair_and_count() -> None:
    flow = SlidingFlow(10 * S)
    assert flow.evaluate(0) == (0.0, 0.0, 0)
    flow.add(1 * S, 3.0, 3.0)
    flow.add(2 * S, -1.0, 1.0)
    assert flow.evaluate(2 * S) == (2.0, 4.0, 2)
    assert flow.evaluate(11 * S) == (-1.0, 1.0, 1)
    assert flow.evaluate(12 * S) == (0.0, 0.0, 0)


# -- DecayedSum ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("half_life_s", [0.0693, 0.693, 6.93, 41.6])
def test_decayed_sum_halves_after_one_half_life(half_life_s: float) -> None:
    ew = DecayedSum(half_life_s)
    t0 = 1_700_000_000 * S
    ew.add(t0, 8.0)
    h_ns = round(half_life_s * S)
    assert ew.value(t0 + h_ns) == pytest.approx(4.0, abs=1e-12)
    assert ew.value(t0 + 2 * h_ns) == pytest.approx(2.0, abs=1e-12)


def test_decayed_sum_half_life_exact_when_h_is_whole_ns() -> None:
    ew = DecayedSum(2.0)
    ew.add(0, 3.0)
    assert ew.value(2 * S) == pytest.approx(1.5, abs=1e-12)


def test_for_window_is_mass_equivalent_boxcar() -> None:
    """H = T * ln 2, so a unit impulse has decayed to exp(-1) after T."""
    ew = DecayedSum.for_window(10.0)
    assert ew.half_life_s == pytest.approx(10.0 * math.log(2.0), abs=1e-15)
    ew.add(0, 1.0)
    assert ew.value(10 * S) == pytest.approx(math.exp(-1.0), abs=1e-12)


def test_decayed_sum_matches_brute_force() -> None:
    rng = random.Random(2)
    ew = DecayedSum(3.0)
    lam = math.log(2.0) / 3.0
    events: list[tuple[int, float]] = []
    t = 0
    for _ in range(300):
        t += rng.randint(1, 200_000_000)
        x = rng.uniform(-2, 2)
        ew.add(t, x)
        events.append((t, x))
    now = t + 1 * S
    brute = math.fsum(x * math.exp(-lam * (now - ti) / S) for ti, x in events)
    assert ew.value(now) == pytest.approx(brute, abs=1e-12)


def test_decayed_sum_query_does_not_change_state() -> None:
    a, b = DecayedSum(1.0), DecayedSum(1.0)
    for i in range(50):
        a.add(i * 10_000_000, 1.0)
        b.add(i * 10_000_000, 1.0)
        a.value(i * 10_000_000 + 5_000_000)
    assert a.value(2 * S) == b.value(2 * S)


def test_decayed_sum_late_impulse_is_decayed_to_the_clock() -> None:
    ew = DecayedSum(1.0)
    ew.add(2 * S, 1.0)
    ew.add(1 * S, 4.0)  # one half-life older than the last impulse
    assert ew.value(2 * S) == pytest.approx(1.0 + 2.0, abs=1e-12)


def test_decayed_sum_empty_is_zero() -> None:
    assert DecayedSum(1.0).value(123) == 0.0
