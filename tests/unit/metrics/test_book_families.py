"""The per-book-event families of metrics.md 1.3, 2.1-2.2, 3.2 and 4.2-4.3 (metrics.book_families), both cores.

Hand vectors (1.5, exact), invariants (no flow across an invalid period, mirror symmetry, bounded ranges under
hypothesis), EW primitives against brute force, T15 (the values do not depend on how often payloads are taken),
and the reference module against the same source compiled (flowgauge.core._families) on random streams.
"""

from __future__ import annotations

import math
import random
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowgauge import core
from flowgauge.metrics import book_families as ref
from flowgauge.metrics import windows as py_windows
from flowgauge.metrics.params import (
    DepthExtParams,
    IntegratedOfiParams,
    MicropriceParams,
    MlofiParams,
    OfiExtParams,
)

_S = 1_000_000_000
_MS = 1_000_000
T0 = 1_700_000_000 * _S
Levels = list[tuple[float, float]]


def impl(core_name: str) -> tuple[ModuleType, ModuleType]:
    """(families implementation, window classes) of a core."""
    if core_name == core.COMPILED:
        if core.fallback_reason() is not None:
            pytest.fail(f"compiled core unavailable: {core.fallback_reason()}")
        return core.compiled_families(), core.compiled_module()
    return ref, py_windows


def book(core_name: str, bids: Levels, asks: Levels) -> Any:
    b = core.new_book(core_name)
    b.load(bids, asks, None, 0)
    return b


def families(
    core_name: str, tick: float = 0.1, micro: MicropriceParams | None = None, ofi: OfiExtParams | None = None
) -> list[Any]:
    mod, win = impl(core_name)
    return [
        mod.OfiExt(tick, ofi or OfiExtParams(), win),
        mod.Mlofi(MlofiParams(levels=3), IntegratedOfiParams(), win),
        mod.DepthExt(DepthExtParams()),
        mod.Microprice(tick, micro or MicropriceParams()),
    ]


def fill(fams: list[Any], b: Any, ts: int) -> dict[str, Any]:
    out: dict[str, Any] = {"quality": [], "coverage": {}}
    flags: set[str] = set()
    for family in fams:
        family.fill(b, out, ts, flags)
    out["quality"] = sorted(flags)
    return out


# metrics.md 1.5: S0 then S1..S6, (bid px, bid sz, ask px, ask sz), and e_n (CKS).
VECTOR = [
    (100.0, 5.0, 100.1, 3.0),
    (100.0, 7.0, 100.1, 3.0),
    (100.0, 7.0, 100.1, 1.0),
    (100.0, 7.0, 100.2, 4.0),
    (100.1, 2.0, 100.2, 4.0),
    (100.0, 7.0, 100.2, 4.0),
    (100.0, 7.0, 100.1, 5.0),
]
VECTOR_E = [2.0, 2.0, 1.0, 2.0, -2.0, -5.0]


def test_cks_event_reproduces_the_hand_vector() -> None:
    got = [ref.cks_event(*VECTOR[n - 1], *VECTOR[n]) for n in range(1, len(VECTOR))]
    assert got == VECTOR_E
    assert ref.cks_event(100.0, 5.0, 100.1, 3.0, 100.0, 4.0, 100.1, 3.0) == -1.0  # a pure cancel of x gives -x


@pytest.mark.parametrize("core_name", core.CORES)
def test_the_vector_through_ofi_ext_and_mlofi(core_name: str) -> None:
    fams = families(core_name)
    ofi_ext, mlofi = fams[0], fams[1]
    for n, (bp, bs, ap, as_) in enumerate(VECTOR):
        b = book(core_name, [(bp, bs)], [(ap, as_)])
        ofi_ext.on_book(b, T0 + n * _MS)
        mlofi.on_book(b, T0 + n * _MS)
    out = fill(fams, b, T0 + 10 * _MS)
    # OFI(S0 -> S6) = 0, sum |e_n| = 14.
    assert out["ofi_ratio_1s"] == 0.0
    assert out["ofi_depthnorm_1s"] == 0.0
    assert out["ofi_implied_bps_1s"] == 0.0
    # Level 1 of the rank-keyed MLOFI is the CKS e_n; single-level books leave levels 2 and 3 empty: no flow.
    assert out["mlofi_1s"] == [0.0, 0.0, 0.0]
    # After S2 only: +2 +2, ratio 1.
    fams = families(core_name)
    for n in range(3):
        fams[0].on_book(book(core_name, [VECTOR[n][:2]], [VECTOR[n][2:]]), T0 + n * _MS)
    out = fill(fams[:1], None, T0 + 3 * _MS)
    assert out["ofi_ratio_1s"] == 1.0
    assert out["ofi_implied_bps_1s"] is None  # no VALID book at this payload: no mid


@pytest.mark.parametrize("core_name", core.CORES)
def test_mlofi_hand_vector(core_name: str) -> None:
    mod, win = impl(core_name)
    mlofi = mod.Mlofi(MlofiParams(levels=2), IntegratedOfiParams(weights=(3.0, 1.0)), win)
    mlofi.on_book(book(core_name, [(10.0, 1.0), (9.0, 2.0)], [(11.0, 1.0), (12.0, 4.0)]), T0)
    # Level 1: bid size +2 (same price) -> +2; ask improves to 10.5 x 3 -> -3. Level 2: bid 9.0 x 2 -> 9.0 x 5: +3;
    # the ask rank 2 is now 11.0 x 1 (better than 12.0): -1.
    mlofi.on_book(book(core_name, [(10.0, 3.0), (9.0, 5.0)], [(10.5, 3.0), (11.0, 1.0)]), T0 + _MS)
    out: dict[str, Any] = {}
    flags: set[str] = set()
    mlofi.fill(None, out, T0 + _MS, flags)
    assert out["mlofi_1s"] == [-1.0, 2.0]
    # Q = (sum of the 2 levels' sizes of both sides over the 1 event) / (2 * M * N) = (3 + 5 + 3 + 1) / 4 = 3.
    assert out["mlofi_norm_1s"] == [-1.0 / 3.0, 2.0 / 3.0]
    assert out["ofi_integrated_1s"] == 0.75 * (-1.0 / 3.0) + 0.25 * (2.0 / 3.0)
    assert out["ofi_ml_avg_1s"] == (-1.0 / 3.0 + 2.0 / 3.0) / 2
    assert not flags


@pytest.mark.parametrize("core_name", core.CORES)
def test_no_flow_across_an_invalid_period(core_name: str) -> None:
    """T14: the transition across a gap is not an event; the CKS bar holding the reset is skipped."""
    fams = families(core_name)
    states = [
        ([(100.0, 5.0)], [(100.1, 3.0)]),
        ([(100.0, 7.0)], [(100.1, 3.0)]),  # +2
        ([(99.0, 1.0)], [(99.5, 50.0)]),  # after the invalid period: a first state, no flow
        ([(99.0, 4.0)], [(99.5, 50.0)]),  # +3
    ]
    for n, (bids, asks) in enumerate(states):
        if n == 2:
            for family in fams:
                family.on_book_invalid(T0 + n * _MS)
        b = book(core_name, bids, asks)
        for family in fams:
            family.on_book(b, T0 + n * _MS + 1)
    out = fill(fams, b, T0 + 5 * _MS)
    assert out["ofi_ratio_1s"] == 1.0
    assert out["ofi_depthnorm_1s"] is not None and out["ofi_depthnorm_1s"] > 0.0
    assert out["mlofi_1s"] == [5.0, 0.0, 0.0]


# A stream whose L1 depth (q^B + q^A) / 2 stays 4, so AD_ew is exactly 4 (the EW mean of a constant).
CONSTANT_DEPTH = [
    (100.0, 5.0, 100.1, 3.0),  # mid 100.05
    (100.1, 5.0, 100.2, 3.0),  # the book a tick up: new inside bid +5, ask retreat +3 -> +8 at mid 100.15
    (100.0, 5.0, 100.1, 3.0),  # back: bid retreat -5, new inside ask -3 -> -8 at mid 100.05
    (100.0, 6.0, 100.1, 2.0),  # bid +1, ask 3 -> 2: +1 -> +2 at mid 100.05
]


@pytest.mark.parametrize("core_name", core.CORES)
def test_notional_and_implied_ticks_hand_vector(core_name: str) -> None:
    fams = families(core_name)
    ofi_ext = fams[0]
    for n, (bp, bs, ap, as_) in enumerate(CONSTANT_DEPTH):
        b = book(core_name, [(bp, bs)], [(ap, as_)])
        ofi_ext.on_book(b, T0 + n * _MS)
    out = fill(fams[:1], b, T0 + 5 * _MS)
    # sum e_n = 2; notional 8 x 100.15 - 8 x 100.05 + 2 x 100.05 = 200.9 (quote units).
    assert out["ofi_notional_1s"] == pytest.approx(200.9, rel=1e-12)
    assert out["ofi_notional_300s"] == out["ofi_notional_1s"]
    assert out["ofi_depthnorm_1s"] == 0.5  # 2 / AD, AD = 4
    assert out["ofi_implied_ticks_1s"] == 0.25  # 2 / (2 x 4)
    assert out["ofi_implied_bps_1s"] == 0.25 * 0.1 / 100.05 * 1e4
    # Into an empty ask side (ask retreat: +q^A_{n-1} = +2): no mid after it, so the mid before it prices it.
    ofi_ext.on_book(book(core_name, [(100.0, 6.0)], []), T0 + 6 * _MS)
    out = fill(fams[:1], None, T0 + 7 * _MS)
    assert out["ofi_notional_1s"] == pytest.approx(200.9 + 2.0 * 100.05, rel=1e-12)
    assert out["ofi_implied_bps_1s"] is None  # no mid at this payload
    assert out["ofi_implied_ticks_1s"] is not None
    # The 1 s window has passed: no flow in it (0, not null: the window is observed); 300 s still holds it.
    out = fill(fams[:1], None, T0 + 2 * _S)
    assert out["ofi_notional_1s"] == 0.0
    assert out["ofi_implied_ticks_1s"] == 0.0
    assert out["ofi_notional_300s"] == pytest.approx(200.9 + 2.0 * 100.05, rel=1e-12)
    # Before any book state: null.
    assert fill(families(core_name)[:1], None, T0)["ofi_notional_1s"] is None


def brute_force_z(
    samples: list[float], value: float, bar_s: float, half_life_s: float, min_samples: int
) -> float | None:
    """The EW z-score from its definition: bar j of n (regular bars, the first weighed as one bar after another)
    weighs (1 - a) a^(n-1-j), a = 2^(-bar / H); mean and variance are the weighted ones."""
    n = len(samples)
    a = 2.0 ** (-bar_s / half_life_s)
    weights = [(1.0 - a) * a ** (n - 1 - j) for j in range(n)]
    total = math.fsum(weights)
    if n < min_samples or total < 0.95:
        return None
    mean = math.fsum(w * y for w, y in zip(weights, samples, strict=True)) / total
    var = math.fsum(w * (y - mean) ** 2 for w, y in zip(weights, samples, strict=True)) / total
    return (value - mean) / math.sqrt(var) if var > 0.0 else None


@pytest.mark.parametrize("core_name", core.CORES)
def test_ofi_z_matches_a_brute_force_ew_over_the_bars(core_name: str) -> None:
    """Constant L1 depth (AD = 4): each bar's sample is its summed e_n / 4, bars without an event are zeros, the
    first bar (it holds the first state) is not a sample."""
    params = OfiExtParams(z_half_life_s=20.0, z_min_samples=5)
    ofi_ext = families(core_name, ofi=params)[0]
    rng = random.Random(5)
    states = [(100.0, float(q), 100.1, 8.0 - float(q)) for q in range(1, 8)]
    prev = states[3]
    events: list[tuple[int, float]] = []  # (time, e_n)
    t = T0 + 400 * _MS
    ofi_ext.on_book(book(core_name, [prev[:2]], [prev[2:]]), t)
    first_bar = {w: t // (w * _S) for w in (1, 10)}
    checked = {1: 0, 10: 0}
    while t < T0 + 400 * _S:
        t += rng.choice([50, 200, 700, 2500, 4000]) * _MS
        state = rng.choice(states)
        events.append((t, ref.cks_event(*prev, *state)))
        prev = state
        ofi_ext.on_book(book(core_name, [state[:2]], [state[2:]]), t)
        out = fill([ofi_ext], None, t)
        for w in (1, 10):
            bar_ns = w * _S
            k_now = t // bar_ns
            sums = [0.0] * (k_now - first_bar[w] - 1)  # the closed bars after the first
            window = 0.0
            for te, e in events:
                k = te // bar_ns
                if first_bar[w] < k < k_now:
                    sums[k - first_bar[w] - 1] += e
                if te > t - bar_ns:
                    window += e
            expected = brute_force_z([x / 4.0 for x in sums], window / 4.0, w, 20.0, 5)
            got = out[f"ofi_z_{w}s"]
            if expected is None:
                assert got is None, (w, t)
            else:
                assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), (w, t)
                checked[w] += 1
    assert checked[1] > 100 and checked[10] > 50


@pytest.mark.parametrize("core_name", core.CORES)
def test_ofi_z_is_null_until_warm_and_skips_reset_bars(core_name: str) -> None:
    """Default parameters (H = 24 h): after an hour of bars the weight is far below 0.95, so null (no flag of its
    own); a bar holding an invalid period is not a sample."""
    ofi_ext = families(core_name)[0]
    a, b = (100.0, 5.0, 100.1, 3.0), (100.0, 6.0, 100.1, 2.0)
    for n in range(3600):
        s = a if n % 2 else b
        ofi_ext.on_book(book(core_name, [s[:2]], [s[2:]]), T0 + n * _S + 1)
    out = fill([ofi_ext], None, T0 + 3600 * _S)
    assert [out[f"ofi_z_{w}"] for w in ("1s", "10s", "60s", "300s")] == [None] * 4
    zbars = ofi_ext.zbars[0]
    assert zbars.count == 3599 - 1  # bars 1..3598 closed; bar 0 held the first state
    count = zbars.count
    ofi_ext.on_book_invalid(T0 + 3600 * _S + 5)
    ofi_ext.on_book(book(core_name, [a[:2]], [a[2:]]), T0 + 3600 * _S + 10)
    ofi_ext.on_book(book(core_name, [b[:2]], [b[2:]]), T0 + 3605 * _S)
    # Bar 3599 closes at the invalid event as a sample; bar 3600 (the reset and the first state after it) is not;
    # bars 3601..3604 had no event with the book VALID again: zeros.
    assert zbars.count == count + 1 + 4
    ofi_ext.on_book_invalid(T0 + 3605 * _S + 5)
    ofi_ext.on_book(book(core_name, [a[:2]], [a[2:]]), T0 + 3610 * _S)
    assert zbars.count == count + 5  # bar 3605 held the reset, 3606..3609 the invalid book: no sample


def l1_of(state: tuple[Levels, Levels]) -> tuple[float, float, float, float]:
    bids, asks = state
    bid = bids[0] if bids else (-math.inf, 0.0)
    ask = asks[0] if asks else (math.inf, 0.0)
    return bid[0], bid[1], ask[0], ask[1]


@pytest.mark.parametrize("seed", [3, 8, 13])
def test_mirror_symmetry_of_the_z_score_and_notional(seed: int) -> None:
    """Reflected about 100 with sides swapped: ofi_z negates exactly (short half-life so it is warm); each e_n
    negates and its mid m becomes 200 - m, so the notional becomes notional - 200 x (sum of e_n). Fixed seeds:
    the stream must hold enough 1 s bars without a reset for the z-score to warm up."""
    states = random_states(seed, 400)
    ours = run(core.PYTHON, states, step_ms=40)
    theirs = run(core.PYTHON, [None if s is None else mirrored(s) for s in states], step_ms=40)
    flows: list[tuple[int, float]] = []
    prev: tuple[float, float, float, float] | None = None
    for n, (state, a, b) in enumerate(zip(states, ours, theirs, strict=True)):
        t = n * 40 * _MS
        if state is None:
            prev = None
        else:
            l1 = l1_of(state)
            # An event is priced at a mid: the new state's, else the previous one's; with neither, no notional.
            if prev is not None and ((l1[1] > 0.0 and l1[3] > 0.0) or (prev[1] > 0.0 and prev[3] > 0.0)):
                flows.append((t, ref.cks_event(*prev, *l1)))
            prev = l1
        for w in ("1s", "10s", "60s", "300s"):
            key = f"ofi_z_{w}"
            assert (a[key] is None and b[key] is None) or a[key] == -b[key], key
        flow_1s = math.fsum(e for te, e in flows if te > t - _S)
        if a["ofi_notional_1s"] is not None:
            scale = max(1.0, abs(a["ofi_notional_1s"]))
            assert a["ofi_notional_1s"] - b["ofi_notional_1s"] == pytest.approx(200.0 * flow_1s, abs=1e-9 * scale)
        else:
            assert b["ofi_notional_1s"] is None
    assert any(out["ofi_z_1s"] is not None for out in ours)


def test_cks_regression_recovers_a_linear_impact_and_skips_reset_bars() -> None:
    bars = ref._Bars(1, 1800.0)
    mid, t = 100.0, T0
    rng = random.Random(7)
    for k in range(40):
        x = rng.choice([-3.0, -1.0, 1.0, 2.0, 4.0])
        t = T0 + k * _S + 10 * _MS
        bars.on_book(t, x, mid, 0.1)
        mid = mid + 0.1 * 0.5 * x  # y = 0.5 x ticks
        bars.on_book(t + 1, 0.0, mid, 0.1)
    bars.on_book(T0 + 41 * _S, 0.0, mid, 0.1)
    beta, r2 = bars.reg.fit()
    assert beta == pytest.approx(0.5, abs=1e-9)
    assert r2 == pytest.approx(1.0, abs=1e-9)
    weight = bars.reg.sw
    bars.invalid()  # this bar holds a reset
    bars.on_book(T0 + 41 * _S + 5, None, 50.0, 0.1)  # first state after it: mid jumps, no flow
    bars.on_book(T0 + 43 * _S, 0.0, 50.0, 0.1)
    assert bars.reg.fit()[0] == pytest.approx(0.5, abs=1e-9)
    # Bar 41 (the reset) was skipped; bar 42, empty after a VALID first state, is a (0, 0) point.
    assert bars.reg.sw == weight * bars.reg.a + 1.0


def test_ew_regression_matches_weighted_least_squares() -> None:
    rng = random.Random(3)
    reg = ref._EwRegression(10.0, 1800.0)
    xs = [rng.gauss(0, 5) for _ in range(200)]
    ys = [0.3 * x + rng.gauss(0, 1) for x in xs]
    for x, y in zip(xs, ys, strict=True):
        reg.add(x, y)
    reg.add_empty(3)
    xs += [0.0] * 3
    ys += [0.0] * 3
    n = len(xs)
    w = [reg.a ** (n - 1 - i) for i in range(n)]
    sw = math.fsum(w)
    mx = math.fsum(wi * x for wi, x in zip(w, xs, strict=True)) / sw
    my = math.fsum(wi * y for wi, y in zip(w, ys, strict=True)) / sw
    cxy = math.fsum(wi * (x - mx) * (y - my) for wi, x, y in zip(w, xs, ys, strict=True))
    cxx = math.fsum(wi * (x - mx) ** 2 for wi, x in zip(w, xs, strict=True))
    cyy = math.fsum(wi * (y - my) ** 2 for wi, y in zip(w, ys, strict=True))
    beta, r2 = reg.fit()
    assert beta == pytest.approx(cxy / cxx, rel=1e-9)
    assert r2 == pytest.approx(cxy * cxy / (cxx * cyy), rel=1e-9)


def test_time_weighted_mean_matches_the_integral() -> None:
    """metrics.md 0.3: m/w is the exp-weighted time average of the state that held (y_prev), checked against
    the closed-form integral over the pieces."""
    rng = random.Random(11)
    half_life = 6.93
    tw = ref._TimeWeighted(half_life)
    lam = math.log(2.0) / half_life
    pieces: list[tuple[int, float]] = []
    t = T0
    for _ in range(60):
        y = rng.uniform(-1.0, 1.0)
        tw.update(t, y)
        pieces.append((t, y))
        t += rng.randrange(1, 2000) * _MS
    now = t
    num = den = 0.0
    for i, (start, y) in enumerate(pieces):
        end = pieces[i + 1][0] if i + 1 < len(pieces) else now
        a, b = (now - end) / _S, (now - start) / _S
        weight = math.exp(-lam * a) - math.exp(-lam * b)
        num += weight * y
        den += weight
    value, warm = tw.value(now)
    assert value == pytest.approx(num / den, rel=1e-9, abs=1e-12)
    assert warm == (den >= 0.95)


# -- random streams ------------------------------------------------------------------------------------------


def random_states(seed: int, n: int, grid: float = 0.125) -> list[tuple[Levels, Levels] | None]:
    """Book states on a binary-exact price grid around 100 (None = the book went invalid)."""
    rng = random.Random(seed)
    mid = 100.0
    out: list[tuple[Levels, Levels] | None] = []
    for _ in range(n):
        if rng.random() < 0.03:
            out.append(None)
            continue
        mid = mid + grid * rng.choice([-1, 0, 0, 0, 1])
        half = grid * rng.choice([1, 1, 2, 3])
        nb, na = rng.choice([0, 1, 3, 12, 30]), rng.choice([0, 1, 3, 12, 30])
        bids = [(mid - half - grid * i, float(rng.randrange(1, 40))) for i in range(nb)]
        asks = [(mid + half + grid * i, float(rng.randrange(1, 40))) for i in range(na)]
        out.append((bids, asks))
    return out


QUICK_FIT = MicropriceParams(sample_ms=7, min_samples=40, refit_s=0.2, memory_days=0.0001)
QUICK_Z = OfiExtParams(z_half_life_s=0.5, z_min_samples=3)  # ofi_z_1s warm after 3 bars of 1 s (weight 1 - 4^-n)


def run(
    core_name: str, states: list[tuple[Levels, Levels] | None], every: int = 1, step_ms: int = 3
) -> list[dict[str, Any]]:
    fams = families(core_name, tick=0.125, micro=QUICK_FIT, ofi=QUICK_Z)
    outs: list[dict[str, Any]] = []
    valid = None
    for n, state in enumerate(states):
        t = T0 + n * step_ms * _MS
        if state is None:
            for family in fams:
                family.on_book_invalid(t)
            valid = None
        else:
            valid = book(core_name, *state)
            for family in fams:
                family.on_book(valid, t)
        if n % every == 0:
            outs.append(fill(fams, valid, t))
        else:
            outs.append({})
    return outs


@pytest.mark.parametrize("seed", [1, 2])
def test_both_cores_identical_on_random_streams(seed: int) -> None:
    states = random_states(seed, 1500)
    python = run(core.PYTHON, states, step_ms=40)  # 60 s: the 1 s CKS bars fit
    compiled = run(core.COMPILED, states, step_ms=40)
    assert python == compiled  # floats compare exactly
    assert any(out.get("micro_price") is not None for out in python), "the micro-price never fitted"
    assert any(out.get("cks_beta_1s") is not None for out in python)
    assert any(out.get("ofi_z_1s") is not None for out in python)


def test_values_do_not_depend_on_how_often_payloads_are_taken() -> None:
    """T15: the same book events, payloads after every one or after every 5th: equal where both have one."""
    states = random_states(4, 800)
    every_one = run(core.PYTHON, states, 1)
    every_fifth = run(core.PYTHON, states, 5)
    for a, b in zip(every_one, every_fifth, strict=True):
        if b:
            assert a == b


def mirrored(state: tuple[Levels, Levels], centre: float = 100.0) -> tuple[Levels, Levels]:
    """Bids and asks swapped, prices reflected about `centre` (exact on the grid)."""
    bids, asks = state
    return [(2 * centre - p, q) for p, q in asks], [(2 * centre - p, q) for p, q in bids]


SIGNED_FLOW = [
    *(f"ofi_{kind}_{w}" for kind in ("depthnorm", "implied_ticks", "ratio", "z") for w in ("1s", "10s", "60s", "300s")),
    *(f"ofi_{kind}_{w}" for kind in ("integrated", "ml_avg") for w in ("1s", "10s", "60s")),
]


@given(seed=st.integers(0, 10_000))
@settings(max_examples=15, deadline=None)
def test_mirror_symmetry_negates_the_signed_flow_metrics(seed: int) -> None:
    states = random_states(seed, 120)
    ours = run(core.PYTHON, states)
    theirs = run(core.PYTHON, [None if s is None else mirrored(s) for s in states])
    for a, b in zip(ours, theirs, strict=True):
        for key in SIGNED_FLOW:
            assert (a[key] is None and b[key] is None) or a[key] == -b[key], key
        for key in ("mlofi_1s", "mlofi_norm_10s"):
            assert (a[key] is None and b[key] is None) or a[key] == [-x for x in b[key]], key
        for key in ("cks_beta_1s", "cks_r2_1s"):  # y and x both negate: the fit is unchanged
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12) if a[key] is not None else b[key] is None


@given(
    sizes=st.lists(st.integers(1, 50), min_size=2, max_size=40),
    split=st.integers(0, 40),
    half=st.integers(1, 3),
)
@settings(max_examples=60, deadline=None)
def test_mirror_symmetry_negates_the_depth_imbalances(sizes: list[int], split: int, half: int) -> None:
    """A book reflected about its mid with sides swapped: the size-weighted imbalances negate exactly; the
    notional-weighted ones (p*q) up to the price ratio of the levels inside the band (at most 250 bps away)."""
    grid = 0.125
    split = min(split, len(sizes))
    bids = [(100.0 - grid * (half + i), float(q)) for i, q in enumerate(sizes[:split])]
    asks = [(100.0 + grid * (half + i), float(q)) for i, q in enumerate(sizes[split:])]
    if not bids or not asks:
        return
    a = ref.DepthExt(DepthExtParams())
    b = ref.DepthExt(DepthExtParams())
    a.on_book(book(core.PYTHON, bids, asks), T0)
    b.on_book(book(core.PYTHON, *mirrored((bids, asks))), T0)
    ours: list[Any] = a.values or []
    theirs: list[Any] = b.values or []
    assert ours[:2] == [-x for x in theirs[:2]]  # di_lvl_5, di_lvl_10
    for x, y in zip(ours[2:12], theirs[2:12], strict=True):  # di_dist_*, bi_*
        assert (x is None and y is None) or abs(x + y) <= 0.06


BOUNDED = [
    *(f"ofi_ratio_{w}" for w in ("1s", "10s", "60s", "300s")),
    "di_lvl_5", "di_lvl_10",
    *(f"{kind}_{b}" for kind in ("di_dist", "bi") for b in ("5bps", "10bps", "25bps", "100bps", "250bps")),
    "qi_l1_ew_10s", "di_lvl_5_ew_10s", "di_dist_10bps_ew_10s", "bi_10bps_ew_10s",
]  # fmt: skip


@given(seed=st.integers(0, 100_000))
@settings(max_examples=25, deadline=None)
def test_bounded_metrics_stay_in_range(seed: int) -> None:
    states = random_states(seed, 150)
    for state, out in zip(states, run(core.PYTHON, states), strict=True):
        for key in BOUNDED:
            value = out[key]
            assert value is None or -1.0 - 1e-12 <= value <= 1.0 + 1e-12, (key, value)
        for key in ("cks_r2_1s", "cks_r2_10s", "cks_r2_60s"):
            assert out[key] is None or 0.0 <= out[key] <= 1.0
        vamp = out["vamp_10bps"]
        if vamp is not None:
            assert state is not None
            prices = [p for side in state for p, _ in side]
            assert min(prices) <= vamp <= max(prices)
        micro = out["micro_price"]
        assert micro is None or math.isfinite(micro)


@pytest.mark.parametrize("core_name", core.CORES)
def test_depth_ext_empty_sides_and_exhausted_bands(core_name: str) -> None:
    depth = families(core_name)[2]
    # Best levels 12.5 bps from the mid (100.0), nothing deeper: nothing within 5 or 10 bps (null), 25 bps and
    # wider reach past the book (EXHAUSTED, PARTIAL_WINDOW).
    b = book(core_name, [(99.875, 3.0)], [(100.125, 1.0)])
    depth.on_book(b, T0)
    out: dict[str, Any] = {"coverage": {}}
    flags: set[str] = set()
    depth.fill(b, out, T0, flags)
    assert out["bi_5bps"] is None and out["bi_10bps"] is None
    assert out["bi_25bps"] == (99.875 * 3.0 - 100.125) / (99.875 * 3.0 + 100.125)
    assert out["di_lvl_5"] == 0.5
    assert flags == {"PARTIAL_WINDOW"}  # the EW means have no time yet: null, so no WARMUP either
    assert out["coverage"] == {
        f"{kind}_{band}": "EXHAUSTED" for band in ("25bps", "100bps", "250bps") for kind in ("di_dist", "bi")
    }
    # One side empty: no mid, the band metrics are null; the level-weighted ones are -1 / +1.
    b = book(core_name, [(99.9, 2.0)], [])
    depth.on_book(b, T0 + _MS)
    out = {}
    depth.fill(b, out, T0 + _MS, set())
    assert out["bi_10bps"] is None and out["vamp_10bps"] is None and out["di_lvl_5"] == 1.0
    depth.on_book_invalid(T0 + 2 * _MS)
    depth.fill(None, out, T0 + 3 * _MS, set())
    assert all(out[key] is None for key in out)


def test_level_weights_follow_the_spec() -> None:
    assert ref.level_weights(3, 3.0) == [1.0, math.exp(-1 / 3), math.exp(-2 / 3)]


def test_solve_inverts_a_small_system() -> None:
    x = ref.solve([[2.0, 1.0], [1.0, 3.0]], [[3.0], [5.0]])
    assert x is not None and x[0][0] == pytest.approx(0.8) and x[1][0] == pytest.approx(1.4)
    assert ref.solve([[1.0, 2.0], [2.0, 4.0]], [[1.0], [2.0]]) is None


def drive(micro: Any, states: list[tuple[float, float, float, float]], step_ms: int) -> None:
    for n, (bp, bs, ap, as_) in enumerate(states):
        micro.on_book(book(core.PYTHON, [(bp, bs)], [(ap, as_)]), T0 + n * step_ms * _MS)


def test_micro_price_fit_fallbacks_and_antisymmetry() -> None:
    params = MicropriceParams(imbalance_buckets=4, max_spread_ticks=2, sample_ms=1, min_samples=2500, refit_s=1e9)
    micro = ref.Microprice(1.0, params)
    rng = random.Random(5)
    bid, states = 100.0, []
    for _ in range(3000):
        bs, as_ = float(rng.randrange(1, 20)), float(rng.randrange(1, 20))
        states.append((bid, bs, bid + rng.choice([1.0, 1.0, 2.0]), as_))
        # Imbalance drives the next move: the lighter side's price gives way.
        if rng.random() < 0.3 and bs != as_:
            bid += 1.0 if bs > as_ else -1.0
    out: dict[str, Any] = {}
    micro.fill(book(core.PYTHON, [(1.0, 1.0)], [(2.0, 1.0)]), out, T0, set())
    assert out["micro_price"] is None  # nothing fitted yet
    drive(micro, states, 1)
    assert micro.g is not None
    for x in range(micro.n_states):
        g, m = micro.g[x], micro.g[micro._mirror(x)]
        assert g is not None and m is not None
        assert g == pytest.approx(-m, abs=1e-9)
    heavy_bid = book(core.PYTHON, [(200.0, 19.0)], [(201.0, 1.0)])
    micro.on_book(heavy_bid, T0 + 10**9 * _MS)
    micro.fill(heavy_bid, out, T0, set())
    assert out["micro_price"] is not None and out["micro_price"] > 200.5  # above the mid: the bid is heavy
    assert out["micro_minus_mid_bps"] > 0.0
    wide = book(core.PYTHON, [(200.0, 19.0)], [(205.0, 1.0)])  # 5 ticks > max_spread_ticks: the spec's fallback
    micro.on_book(wide, T0 + 10**9 * _MS + 1)
    micro.fill(wide, out, T0, set())
    assert out["micro_price"] is None and out["micro_minus_mid_bps"] is None


def test_micro_price_fit_survives_states_that_never_precede_a_move() -> None:
    """A state only ever followed by itself (no mid change seen after it) would make 1 - Q singular: it is left out
    of the system (null) and the others still fit."""
    micro = ref.Microprice(1.0, MicropriceParams(imbalance_buckets=2, max_spread_ticks=2))
    # States: (spread 1, bucket 0) = 0, (1, 1) = 1, (2, 0) = 2, (2, 1) = 3.
    for _ in range(5):
        micro._count(0, 0, 0)
        micro._count(0, 0, -2)  # a tick down from the light-bid state, which it keeps
        micro._count(1, 1, 2)  # a tick up from the heavy-bid state, which it keeps
        micro._count(1, 1, 0)
        micro._count(2, 2, 0)  # spread 2, bid light: never moves
    g = micro._fit()
    assert g is not None
    assert g[2] is None and g[3] is None  # stuck, and never observed
    assert g[0] is not None and g[1] is not None
    assert g[0] == -6.0 and g[1] == 6.0  # half the steps move a tick, the same way 6 moves on
