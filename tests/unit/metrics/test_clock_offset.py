"""The venue clock offset estimator (flowgauge.metrics.clock): a running median of ts_recv - ts_exchange, one
sample per received frame, in a fixed ring."""

from __future__ import annotations

import random

import pytest

from flowgauge.metrics.clock import ClockOffset

MS = 1_000_000
S = 1_000_000_000
T0 = 1_800_000_000 * S


def feed(clock: ClockOffset, offsets_ms: list[float], start: int = T0, step_ms: int = 100) -> int:
    """One frame per offset, `step_ms` apart on the receive clock; returns the next receive time."""
    t = start
    for off in offsets_ms:
        clock.observe(t, t - round(off * MS))
        t += step_ms * MS
    return t


def test_no_estimate_before_min_samples_then_the_median() -> None:
    clock = ClockOffset(2.0, window=64, every=8, min_samples=16)
    feed(clock, [40.0] * 15)
    assert clock.offset_ns is None and not clock.skewed
    feed(clock, [40.0], start=T0 + 15 * 100 * MS)
    assert clock.offset_ns == 40 * MS


def test_outliers_do_not_move_it() -> None:
    rng = random.Random(7)
    clock = ClockOffset(2.0)
    offsets = []
    for n in range(2000):
        if n % 5 == 0:  # a fifth of the frames carry old news (trades re-sent on subscribe) or a clock glitch
            offsets.append(rng.choice([49_000.0, -30_000.0, 5_000.0]))
        else:
            offsets.append(rng.uniform(20.0, 80.0))  # network delay
    feed(clock, offsets)
    assert clock.offset_ns is not None
    assert 20 * MS <= clock.offset_ns <= 80 * MS
    assert not clock.skewed


def test_a_burst_in_one_frame_is_one_sample() -> None:
    clock = ClockOffset(2.0, window=16, every=1, min_samples=4)
    t = feed(clock, [30.0] * 8)
    for k in range(200):  # 200 trades 49 s old in one frame: one ts_recv
        clock.observe(t, t - 49 * S - k * MS)
    feed(clock, [30.0] * 2, start=t + 100 * MS)
    assert clock.offset_ns == 30 * MS


def test_skew_beyond_the_bound_flags_and_clears() -> None:
    clock = ClockOffset(2.0)
    t = feed(clock, [50.0] * 100)
    assert not clock.skewed
    t = feed(clock, [-5_000.0] * 100, start=t)  # the venue's clock jumped 5 s ahead of ours
    assert clock.skewed and clock.offset_ns is not None and abs(clock.offset_ns + 5 * S) < 100 * MS
    feed(clock, [50.0] * 100, start=t)
    assert not clock.skewed


def test_it_follows_a_step_within_half_a_window() -> None:
    clock = ClockOffset(2.0, window=64, every=8, min_samples=16)
    t = feed(clock, [0.0] * 200)
    t = feed(clock, [3_000.0] * 31, start=t)
    assert not clock.skewed  # 31 of 64: still the old median
    feed(clock, [3_000.0] * (33 + 8), start=t)  # past half the window, and the next median is taken
    assert clock.skewed and clock.offset_ns == 3 * S


def test_memory_is_bounded() -> None:
    clock = ClockOffset(2.0, window=64)
    feed(clock, [float(n % 100) for n in range(100_000)], step_ms=1)
    assert clock.window == 64
    assert len(clock._ring) == 64  # one fixed ring, however long it runs


def test_the_bound_is_exclusive_and_absolute() -> None:
    ahead, behind, at = (
        ClockOffset(1.0, min_samples=1),
        ClockOffset(1.0, min_samples=1),
        ClockOffset(1.0, min_samples=1),
    )
    feed(ahead, [-1_001.0])
    feed(behind, [1_001.0])
    feed(at, [1_000.0])
    assert ahead.skewed and behind.skewed and not at.skewed


def test_zero_exchange_time_is_ignored() -> None:
    clock = ClockOffset(2.0, min_samples=1)
    clock.observe(T0, 0)  # a venue event without a time
    assert clock.offset_ns is None


@pytest.mark.parametrize(
    "kwargs", [{"bound_s": 0.0}, {"bound_s": float("nan")}, {"window": 0}, {"every": 0}, {"min_samples": 65}]
)
def test_bad_parameters(kwargs: dict[str, float]) -> None:
    bound = kwargs.pop("bound_s", 2.0)
    with pytest.raises(ValueError):
        ClockOffset(bound, **kwargs)  # type: ignore[arg-type]
