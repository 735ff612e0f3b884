"""1-second statistics: vol_1m from 1 s returns against brute force, resiliency of an AR(1) depth, z-scores."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from flowgauge.metrics.seconds import SecondStats

S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_vol_1m_is_the_ew_rms_of_one_second_log_returns() -> None:
    rng = random.Random(4)
    stats = SecondStats(vol_half_life_s=20.0, vol_min_samples=5)
    mid = 100.0
    closes = []
    for k in range(200):
        # a few states per second; the bar's close is the last one
        for j in range(3):
            mid *= math.exp(rng.gauss(0, 2e-4))
            stats.on_book(T0 + k * S + j * 300_000_000, mid, 1.0, 1e5)
        closes.append(mid)
        if k == 2:
            assert stats.vol_1m() is None  # fewer than vol_min_samples returns
    stats.advance(T0 + 200 * S)  # closes the last bar
    returns = [math.log(b / a) for a, b in itertools.pairwise(closes)]
    lam = math.log(2) / 20.0
    a = math.exp(-lam)
    n = len(returns)
    weights = [(1 - a) * a ** (n - 1 - i) for i in range(n)]
    brute = math.sqrt(math.fsum(w * r * r for w, r in zip(weights, returns, strict=True)) / math.fsum(weights)) * 1e4
    assert stats.vol_1m() == pytest.approx(brute, rel=1e-9)


def test_quiet_seconds_are_zero_returns_and_an_invalid_book_none() -> None:
    stats = SecondStats(vol_half_life_s=5.0, vol_min_samples=1)
    stats.on_book(T0, 100.0, 1.0, 1.0)
    stats.on_book(T0 + S, 101.0, 1.0, 1.0)
    stats.advance(T0 + 2 * S)
    high = stats.vol_1m()
    assert high is not None and high > 0
    stats.advance(T0 + 30 * S)  # 28 seconds without a change: zero returns pull it down
    low = stats.vol_1m()
    assert low is not None and low < high / 10
    stats.on_invalid(T0 + 30 * S + 1)
    stats.on_book(T0 + 40 * S, 150.0, 1.0, 1.0)  # a jump across a gap is no return
    stats.advance(T0 + 42 * S)
    after = stats.vol_1m()
    assert after is not None and after < low  # one more zero return; the 50% jump counted nowhere


def test_resiliency_of_an_ar1_depth_recovers_its_half_life() -> None:
    rng = random.Random(8)
    phi = 0.9  # half-life ln 0.5 / ln 0.9 = 6.58 s
    stats = SecondStats(resiliency_half_life_s=3000.0)
    x = 0.0
    for k in range(6000):
        x = phi * x + rng.gauss(0, 0.05)
        stats.on_book(T0 + k * S, 100.0, 1.0, 1e6 * math.exp(x))
    stats.advance(T0 + 6000 * S)
    half_life = stats.resiliency_halflife_s()
    assert half_life is not None
    assert half_life == pytest.approx(math.log(0.5) / math.log(phi), rel=0.2)


def test_z_scores_need_samples_and_say_how_unusual_the_state_is() -> None:
    rng = random.Random(2)
    stats = SecondStats(z_half_life_s=600.0, z_min_samples=30)
    stats.on_book(T0, 100.0, 1.0, 1e5)
    assert stats.spread_z(5.0) is None and stats.depth_z(1e5) is None
    for k in range(1, 500):
        stats.on_book(T0 + k * S, 100.0, 1.0 + rng.gauss(0, 0.1), 1e5 * math.exp(rng.gauss(0, 0.1)))
    stats.advance(T0 + 500 * S)
    assert stats.spread_z(2.0) == pytest.approx(10.0, rel=0.3)  # 1 bps above a mean of 1, sd 0.1
    assert stats.depth_z(1e5 * math.exp(-0.3)) == pytest.approx(-3.0, rel=0.3)
    assert stats.depth_z(0.0) is None and stats.spread_z(None) is None
