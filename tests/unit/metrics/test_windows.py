"""Exact sums, sliding windows on exchange time (half-open edges), decayed sums (half-life semantics)."""

from __future__ import annotations

import math
import random

import pytest

from flowgauge.metrics.windows import LATE_HORIZON_NS, DecayedSum, ExactSum, SlidingFlow, SlidingSum

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
    assert len(win) == 1  # kept while a query within the late horizon could still need it
    assert win.value(10 * S + LATE_HORIZON_NS) == 0.0
    assert len(win) == 0


def test_sliding_window_boundary_between_two_items() -> None:
    win = SlidingSum(1 * S)
    win.add(100, 1.0)
    win.add(100 + S // 2, 2.0)
    assert win.value(100 + S // 2) == 3.0
    assert win.value(100 + S) == 2.0  # first item exactly at t - h
    assert win.value(100 + S // 2 + S - 1) == 2.0
    assert win.value(100 + S // 2 + S) == 0.0


def test_sliding_window_is_anchored_on_the_query_time_not_the_latest_time() -> None:
    """Issue 8 item 4: a query at t counts the items in (t - h, t], even after later items or queries."""
    win = SlidingSum(1 * S)
    win.add(10 * S, 1.0)
    win.add(11 * S, 2.0)  # another stream runs ahead
    assert win.value(10 * S) == 1.0  # the later item is held back
    assert win.value(11 * S) == 2.0  # the item at exactly 10 s is out of (10 s, 11 s]
    assert win.value(10 * S + S // 2) == 1.0  # a query back in time, within the late horizon
    assert win.late_queries == 0


def test_sliding_window_late_items() -> None:
    win = SlidingSum(10 * S)
    win.add(5 * S, 1.0)
    win.add(3 * S, 2.0)  # late but inside (now=5s, window (-5s, 5s])
    assert win.value(5 * S) == 3.0
    assert win.value(13 * S) == 1.0  # the late item slid out first: it was inserted in time order
    win.add(2 * S, 4.0)  # late, but a query within the horizon could still need it: kept
    assert win.value(11 * S) == 4.0 + 2.0 + 1.0  # (1 s, 11 s]
    assert win.late_dropped == 0
    # older than every window still answerable (latest 13 s - horizon - h): dropped and counted
    win.add(13 * S - LATE_HORIZON_NS - 10 * S, 8.0)
    assert win.late_dropped == 1


def test_sliding_window_beyond_the_late_horizon_answers_at_the_horizon() -> None:
    win = SlidingSum(1 * S)
    win.add(0, 1.0)
    win.add(10 * S, 2.0)
    # 10 s - horizon is the oldest exact time; an older query is answered there and counted
    assert win.value(0) == win.value(10 * S - LATE_HORIZON_NS) == 0.0
    assert win.late_queries == 1
    assert len(win) == 1  # the item at 0 is gone: memory stays bounded


def _random_interleaving(seed: int) -> list[tuple[str, int, float, float]]:
    """Adds and queries whose times wander back and forth within the late horizon."""
    rng = random.Random(seed)
    ops: list[tuple[str, int, float, float]] = []
    clock = 0
    for _ in range(3000):
        clock += rng.randint(0, 40_000_000)
        t = clock - rng.randint(0, LATE_HORIZON_NS // 2) if rng.random() < 0.3 else clock
        x = rng.choice([0.1, -0.3, 1e-3, 12345.678, -7.77, 0.2, 1e16, -1e16])
        ops.append(("add" if rng.random() < 0.6 else "query", t, x, abs(x)))
    return ops


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sliding_windows_equal_fsum_of_arrived_items_at_the_query_time(seed: int) -> None:
    """Whatever the arrival and query order, the value is the correctly rounded sum of the items that have
    arrived with q - h < t_i <= q: bit-identical to math.fsum over them."""
    h = 1 * S
    win, flow = SlidingSum(h), SlidingFlow(h)
    arrived: list[tuple[int, float, float]] = []
    checked = 0
    for op, t, x, m in _random_interleaving(seed):
        if op == "add":
            win.add(t, x)
            flow.add(t, x, m)
            arrived.append((t, x, m))
            continue
        inside = [(x_, m_) for t_, x_, m_ in arrived if t - h < t_ <= t]
        assert win.value(t) == math.fsum(x_ for x_, _ in inside)
        signed, mass, n = flow.evaluate(t)
        assert (signed, mass, n) == (math.fsum(x_ for x_, _ in inside), math.fsum(m_ for _, m_ in inside), len(inside))
        checked += 1
    assert checked > 1000 and win.late_queries == win.late_dropped == 0
    assert len(win) < len(arrived) // 2  # old items were dropped


def test_decayed_sum_is_anchored_on_the_query_time() -> None:
    ew = DecayedSum(1.0)
    ew.add(1 * S, 4.0)
    ew.add(3 * S, 1.0)  # later impulse (another stream ran ahead)
    assert ew.value(2 * S) == pytest.approx(2.0, abs=1e-12)  # the 3 s impulse is held back
    assert ew.value(3 * S) == pytest.approx(1.0 + 1.0, abs=1e-12)


@pytest.mark.parametrize("seed", [4, 5])
def test_decayed_sum_bits_depend_only_on_the_arrived_impulses_and_the_query_time(seed: int) -> None:
    """An out-of-order feed gives the same bits as a fresh sum fed the same impulses in time order."""
    ew = DecayedSum(0.5)
    arrived: list[tuple[int, float]] = []
    checked = 0
    for op, t, x, _ in _random_interleaving(seed):
        x = max(min(x, 1e3), -1e3)
        if op == "add":
            ew.add(t, x)
            arrived.append((t, x))
            continue
        fresh = DecayedSum(0.5)
        for ti, xi in sorted((p for p in arrived if p[0] <= t), key=lambda p: p[0]):
            fresh.add(ti, xi)
        assert ew.value(t) == fresh.value(t)
        checked += 1
        if checked > 300:
            break
    assert ew.late_queries == ew.late_folded == 0


def test_decayed_sum_beyond_the_horizon() -> None:
    ew = DecayedSum(1.0)
    ew.add(0, 1.0)
    ew.add(2 * S, 1.0)
    ew.add(10 * S, 1.0)  # the impulses at 0 and 2 s are settled (older than 10 s - horizon)
    assert len(ew) == 1
    ew.add(1 * S, 2.0)  # older than the settled time (2 s): decayed to it and folded there, counted
    assert ew.late_folded == 1
    assert ew.value(10 * S) == pytest.approx(1.0 + 2.0**-10 + 2.0**-8 + 2.0 * 2.0**-9, abs=1e-12)
    assert ew.value(0) == ew.value(10 * S - LATE_HORIZON_NS)  # answered at the horizon
    assert ew.late_queries == 1


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


def test_decayed_sum_late_impulse_counts_from_its_own_time() -> None:
    ew = DecayedSum(1.0)
    ew.add(2 * S, 1.0)
    ew.add(1 * S, 4.0)  # one half-life older than the last impulse, within the horizon
    assert ew.value(2 * S) == pytest.approx(1.0 + 2.0, abs=1e-12)
    assert ew.value(1 * S) == 4.0  # at 1 s only the 1 s impulse has happened


def test_decayed_sum_empty_is_zero() -> None:
    assert DecayedSum(1.0).value(123) == 0.0


def test_a_window_emptied_across_a_compaction_does_not_fail() -> None:
    """Dropping every item in one go, with the list compacted half-way (more than 1024 dropped): the loop must
    follow the shortened list (it read a stale length and raised IndexError; the compiled core re-reads it)."""
    for win in (SlidingSum(1 * S), SlidingFlow(1 * S)):
        for i in range(2100):
            if isinstance(win, SlidingSum):
                win.add(i * 1_000_000, 1.0)
            else:
                win.add(i * 1_000_000, 1.0, 1.0)
        later = 2099 * 1_000_000 + 60 * S
        if isinstance(win, SlidingSum):
            assert win.value(later) == 0.0
        else:
            assert win.evaluate(later) == (0.0, 0.0, 0)
        assert len(win) == 0
