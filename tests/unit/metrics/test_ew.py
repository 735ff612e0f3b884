"""EW primitives (metrics.md §0.3) against brute force: weighted sums recomputed from every sample."""

from __future__ import annotations

import math
import random

import pytest

from flowgauge.metrics.ew import (
    WARM_WEIGHT,
    EwMean,
    EwRegression,
    EwStateMean,
    EwVariance,
    decay,
    half_life_for_window,
)

S = 1_000_000_000


def _series(seed: int, n: int, irregular: bool) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    t = 1_700_000_000 * S
    out = []
    for _ in range(n):
        t += rng.randrange(1, 5 * S) if irregular else S
        out.append((t, rng.gauss(3.0, 2.0)))
    return out


def _weights(times: list[int], lam: float, first_dt: float) -> list[float]:
    """Weight of each sample in the EW mean at the last sample: (1 - a_i) * prod of the later decays."""
    n = len(times)
    w = [0.0] * n
    for i in range(n):
        a_i = math.exp(-lam * first_dt) if i == 0 else math.exp(-lam * (times[i] - times[i - 1]))
        later = math.exp(-lam * (times[-1] - times[i]))
        w[i] = (1.0 - a_i) * later
    return w


@pytest.mark.parametrize("irregular", [False, True])
def test_ew_mean_is_the_bias_corrected_weighted_mean(irregular: bool) -> None:
    samples = _series(1, 300, irregular)
    h = 20.0
    ew = EwMean(h, sample_interval_s=1.0)
    for t, y in samples:
        ew.add(t, y)
    lam = math.log(2) / (h * S)
    w = _weights([t for t, _ in samples], lam, 1.0 * S)
    brute = math.fsum(wi * y for wi, (_, y) in zip(w, samples, strict=True)) / math.fsum(w)
    assert ew.value() == pytest.approx(brute, rel=1e-12)
    assert ew.weight == pytest.approx(math.fsum(w), rel=1e-12)


def test_ew_mean_warm_up_weight_is_one_minus_a_to_the_n() -> None:
    ew = EwMean(10.0, sample_interval_s=1.0)
    a = math.exp(-math.log(2) / 10.0)
    n_warm = math.ceil(math.log(1 - WARM_WEIGHT) / math.log(a))  # about 4.3 half-lives of samples
    for k in range(1, n_warm + 1):
        ew.add(k * S, 5.0)
        assert ew.weight == pytest.approx(1 - a**k, rel=1e-12)
        assert ew.value() == pytest.approx(5.0, rel=1e-12)  # bias-corrected: a constant is itself from the start
        assert ew.warm is (k >= n_warm)
    assert 4.3 * 10 - 1 <= n_warm <= 4.4 * 10


def test_half_life_semantics() -> None:
    """An impulse's weight halves after H: the mean of a step 0 -> 1 after H seconds of 1s samples."""
    assert half_life_for_window(10.0) == pytest.approx(6.931471805599453)
    lam = math.log(2) / (7.0 * S)
    assert decay(lam, 7 * S) == pytest.approx(0.5, rel=1e-15)
    assert decay(lam, -S) == 1.0  # time stepping back decays nothing


@pytest.mark.parametrize("irregular", [False, True])
@pytest.mark.parametrize("n", [3, 40, 400])
def test_ew_variance_is_the_weighted_variance_about_the_weighted_mean(irregular: bool, n: int) -> None:
    """Warming up (n = 3, 40 with H = 30 samples) and warm: always the moments under EwMean's weights."""
    samples = _series(2, n, irregular)
    h = 30.0
    ew = EwVariance(h, sample_interval_s=1.0)
    for t, y in samples:
        ew.add(t, y)
    lam = math.log(2) / (h * S)
    w = _weights([t for t, _ in samples], lam, 1.0 * S)
    total = math.fsum(w)
    assert ew.weight == pytest.approx(total, rel=1e-12)
    mean = math.fsum(wi * y for wi, (_, y) in zip(w, samples, strict=True)) / total
    var = math.fsum(wi * (y - mean) ** 2 for wi, (_, y) in zip(w, samples, strict=True)) / total
    assert ew.mean == pytest.approx(mean, rel=1e-10)
    assert ew.variance == pytest.approx(var, rel=1e-10)
    y = 7.5
    assert ew.zscore(y) == pytest.approx((y - mean) / math.sqrt(var), rel=1e-9)


def test_ew_variance_warm_is_the_spec_recursion() -> None:
    """Once the weight is 1 (to rounding), an update is metrics.md §0.3's `v <- a*(v + (1 - a)*d^2)`."""
    ew = EwVariance(5.0)
    for k in range(2000):
        ew.add(k * S, math.sin(k))
    m, v = ew.mean, ew.variance
    assert m is not None and v is not None
    a = math.exp(-math.log(2) / 5.0)
    y = 3.0
    d = y - m
    ew.add(2000 * S, y)
    assert ew.mean == pytest.approx(m + (1 - a) * d, rel=1e-12)
    assert ew.variance == pytest.approx(a * (v + (1 - a) * d * d), rel=1e-12)


def test_ew_variance_zscore_is_null_until_min_samples_and_for_a_constant() -> None:
    ew = EwVariance(10.0, min_samples=5)
    for k in range(4):
        ew.add(k * S, float(k))
        assert ew.zscore(1.0) is None
    ew.add(4 * S, 4.0)
    assert ew.zscore(1.0) is not None
    flat = EwVariance(10.0)
    for k in range(10):
        flat.add(k * S, 2.0)
    assert flat.zscore(3.0) is None  # no scale: no z
    with pytest.raises(ValueError):
        EwVariance(10.0, min_samples=1)
    with pytest.raises(ValueError):
        EwVariance(0.0)


def test_ew_state_mean_is_time_weighted_not_update_weighted() -> None:
    """A burst of 100 updates to 10 within 1 ms weighs 1 ms, not 100 samples."""
    h = 5.0
    lam = math.log(2) / (h * S)
    ew = EwStateMean(h)
    ew.update(0, 1.0)
    for k in range(100):
        ew.update(10 * S + k * 10_000, 10.0)
    ew.update(10 * S + 1_000_000, 1.0)
    t_end = 20 * S
    # brute force: integral of exp(-lam (t_end - s)) y(s) ds / integral of the weights
    pieces = [(0, 10 * S, 1.0), (10 * S, 10 * S + 1_000_000, 10.0), (10 * S + 1_000_000, t_end, 1.0)]

    def mass(a: int, b: int) -> float:
        return math.exp(-lam * (t_end - b)) - math.exp(-lam * (t_end - a))

    num = math.fsum(mass(a, b) * y for a, b, y in pieces)
    den = math.fsum(mass(a, b) for a, b, _ in pieces)
    assert ew.value(t_end) == pytest.approx(num / den, rel=1e-9)
    assert ew.value(t_end) < 1.01


def test_ew_state_mean_skips_time_without_a_state() -> None:
    ew = EwStateMean(5.0)
    assert ew.value(0) is None
    ew.update(0, 4.0)
    assert ew.value(0) == 4.0  # no time has passed: the state itself
    ew.update(S, None)  # invalid for 100 s
    ew.update(101 * S, 8.0)
    # the invalid stretch decayed the 4.0 and added nothing: the mean is still exactly the only value held
    assert ew.value(101 * S) == pytest.approx(4.0, rel=1e-12)
    assert ew.value(200 * S) == pytest.approx(8.0, rel=1e-3)
    ew.reset()
    assert ew.value(300 * S) is None


@pytest.mark.parametrize("irregular", [False, True])
def test_ew_regression_is_weighted_least_squares(irregular: bool) -> None:
    rng = random.Random(5)
    h = 50.0
    reg = EwRegression(h)
    pts = []
    t = 0
    for _ in range(200):
        t += rng.randrange(1, 4 * S) if irregular else S
        x = rng.gauss(0, 1)
        y = 0.3 + 1.7 * x + rng.gauss(0, 0.5)
        reg.add(t, x, y)
        pts.append((t, x, y))
    lam = math.log(2) / (h * S)
    w = [math.exp(-lam * (t - ti)) for ti, _, _ in pts]
    sw = math.fsum(w)
    mx = math.fsum(wi * x for wi, (_, x, _) in zip(w, pts, strict=True)) / sw
    my = math.fsum(wi * y for wi, (_, _, y) in zip(w, pts, strict=True)) / sw
    sxx = math.fsum(wi * (x - mx) ** 2 for wi, (_, x, _) in zip(w, pts, strict=True))
    syy = math.fsum(wi * (y - my) ** 2 for wi, (_, _, y) in zip(w, pts, strict=True))
    sxy = math.fsum(wi * (x - mx) * (y - my) for wi, (_, x, y) in zip(w, pts, strict=True))
    assert reg.beta() == pytest.approx(sxy / sxx, rel=1e-9)
    assert reg.r2() == pytest.approx(sxy * sxy / (sxx * syy), rel=1e-9)


def test_ew_regression_is_null_while_degenerate() -> None:
    reg = EwRegression(10.0)
    for k in range(5):
        reg.add(k * S, 1.0, float(k))
    assert reg.beta() is None and reg.r2() is None  # no spread in x
    reg2 = EwRegression(10.0, min_samples=3)
    reg2.add(0, 0.0, 0.0)
    reg2.add(S, 1.0, 1.0)
    assert reg2.beta() is None
    reg2.add(2 * S, 2.0, 2.0)
    assert reg2.beta() == pytest.approx(1.0)
    assert reg2.r2() == 1.0


def test_sample_ews_follow_a_clock_that_restarts_earlier() -> None:
    """After a sample stamped far ahead, then the real time again, the samples keep counting (decaying from the
    restart) instead of weighing nothing until the future stamp is reached."""
    for ew in (EwMean(10.0), EwVariance(10.0)):
        for k in range(100):
            ew.add(k * S, 1.0)
        ew.add(10**6 * S, 1.0)  # bogus: a jump far ahead
        for k in range(100, 200):
            ew.add(k * S, 5.0)  # the venue's real time again
        value = ew.value() if isinstance(ew, EwMean) else ew.mean
        assert value == pytest.approx(5.0, abs=0.01)  # 100 samples of 5 at H = 10: the 1s are forgotten
    reg = EwRegression(10.0)
    reg.add(10**6 * S, 0.0, 0.0)
    for k in range(50):
        reg.add(k * S, float(k % 7), 2.0 * (k % 7))
    assert reg.beta() == pytest.approx(2.0)
