"""Maker risk signals: vectors, ranges (hypothesis) and monotonicity in every input (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowgauge.metrics.risk import (
    RiskParams,
    _term,
    fragility_index,
    hedge_urgency,
    micro_drift_bps,
    penalty,
    risk_scale,
)

P = RiskParams()
maybe = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
unit = st.one_of(st.none(), st.floats(0.0, 1.0))
signed_unit = st.one_of(st.none(), st.floats(-1.0, 1.0))
stress = st.one_of(st.none(), st.floats(0.0, math.inf))
params = st.builds(
    RiskParams,
    toxicity_threshold=st.floats(0.0, 1.0), toxicity_scale=st.floats(1e-3, 10.0), toxicity_weight=st.floats(0.0, 10.0),
    stress_threshold=st.floats(0.0, 10.0), stress_scale=st.floats(1e-3, 10.0), stress_weight=st.floats(0.0, 10.0),
    fragility_threshold=st.floats(-1.0, 1.0), fragility_scale=st.floats(1e-3, 10.0),
    fragility_weight=st.floats(0.0, 10.0), oi_threshold=st.floats(0.0, 1.0), oi_scale=st.floats(1e-3, 10.0),
    oi_weight=st.floats(0.0, 10.0), vol_threshold=st.floats(0.0, 10.0), vol_scale=st.floats(1e-3, 10.0),
    vol_weight=st.floats(0.0, 10.0), floor=st.floats(1e-6, 1.0),
)  # fmt: skip


def test_normal_conditions_give_full_size_and_no_urgency() -> None:
    assert risk_scale(P, 0.2, 0.1, 0.0, 0.05) == 1.0
    assert hedge_urgency(P, 1.0, 0.2, 0.1) == 0.0
    # missing inputs are neutral
    assert risk_scale(P, None, None, None, None) == 1.0
    assert hedge_urgency(P, None, None, None) == 0.0


def test_vectors() -> None:
    # toxicity 0.6: penalty (0.6 - 0.4) / 0.2 = 1; stress 2.0: (2.0 - 1) / 1 = 1 -> scale 1 / 3
    assert risk_scale(P, 0.6, 2.0, None, None) == pytest.approx(1 / 3)
    # OI pressure is one-sidedness: -0.6 and 0.6 weigh the same, (0.6 - 0.2) / 0.2 = 2
    assert risk_scale(P, None, None, None, -0.6) == risk_scale(P, None, None, None, 0.6) == pytest.approx(1 / 3)
    assert risk_scale(P, 1.0, 1e9, 1.0, 1.0) == P.floor
    # vol ratio 2.5: (2.5 - 1.5) / 1 = 1 -> 1/2
    assert hedge_urgency(P, 2.5, None, None) == pytest.approx(0.5)
    assert hedge_urgency(P, math.inf, None, None) == 1.0
    assert penalty(math.nan, 0.0, 1.0) == 0.0
    # a weight of 0 switches an input off, even an infinite one (0 * inf would be NaN)
    off = RiskParams(stress_weight=0.0)
    assert risk_scale(off, None, math.inf, None, None) == 1.0
    assert hedge_urgency(off, None, None, math.inf) == 0.0


def test_micro_drift_and_fragility_index() -> None:
    assert micro_drift_bps(100.01, 100.0) == pytest.approx(1.0)
    assert micro_drift_bps(None, 100.0) is None and micro_drift_bps(100.0, None) is None
    assert fragility_index(None, None) is None
    assert fragility_index(2.0, -2.0) == pytest.approx(math.tanh(1.0))  # wide spread, thin depth
    assert fragility_index(0.0, None, 4.0, None) == pytest.approx(math.tanh(1.0))


@settings(max_examples=300, deadline=None)
@given(params, unit, stress, signed_unit, signed_unit)
def test_risk_scale_is_in_its_range(p: RiskParams, tox, st_, frag, oi) -> None:  # type: ignore[no-untyped-def]
    r = risk_scale(p, tox, st_, frag, oi)
    assert 0.0 < r <= 1.0
    assert r >= p.floor


@settings(max_examples=300, deadline=None)
@given(params, st.lists(maybe, min_size=4, max_size=4), st.integers(0, 3), st.floats(0.0, 1e6))
def test_risk_scale_never_rises_when_one_input_rises(p: RiskParams, xs, which, bump) -> None:  # type: ignore[no-untyped-def]
    xs = [None if x is not None and math.isnan(x) else x for x in xs]
    base = xs[which] if xs[which] is not None else 0.0
    if which == 3:  # OI pressure: one-sidedness rises with |x|, in either direction
        base = abs(base)
    higher = list(xs)
    higher[which] = base + bump
    if which == 3 and xs[3] is not None and xs[3] < 0:
        higher[3] = -(base + bump)
    lower = list(xs)
    lower[which] = xs[which] if xs[which] is not None else 0.0
    assert risk_scale(p, *higher) <= risk_scale(p, *lower)


@settings(max_examples=300, deadline=None)
@given(params, st.lists(st.one_of(st.none(), st.floats(0.0, math.inf)), min_size=3, max_size=3), st.integers(0, 2),
       st.floats(0.0, 1e6))  # fmt: skip
def test_hedge_urgency_is_in_range_and_never_falls_when_one_input_rises(p: RiskParams, xs, which, bump) -> None:  # type: ignore[no-untyped-def]
    u = hedge_urgency(p, *xs)
    assert 0.0 <= u <= 1.0
    higher = list(xs)
    higher[which] = (xs[which] or 0.0) + bump
    lower = list(xs)
    lower[which] = xs[which] or 0.0
    assert hedge_urgency(p, *higher) >= hedge_urgency(p, *lower)


@settings(max_examples=200, deadline=None)
@given(params, unit, stress, signed_unit, signed_unit, st.one_of(st.none(), st.floats(0.0, math.inf)))
def test_the_written_out_terms_are_the_reference_sums(p: RiskParams, tox, st_, frag, oi, vol) -> None:  # type: ignore[no-untyped-def]
    """risk_scale / hedge_urgency spell _term out for speed; the same additions in the same order: the same bits."""
    total = (_term(p.toxicity_weight, tox, p.toxicity_threshold, p.toxicity_scale)
             + _term(p.stress_weight, st_, p.stress_threshold, p.stress_scale)
             + _term(p.fragility_weight, frag, p.fragility_threshold, p.fragility_scale)
             + _term(p.oi_weight, None if oi is None else abs(oi), p.oi_threshold, p.oi_scale))  # fmt: skip
    assert risk_scale(p, tox, st_, frag, oi) == max(p.floor, 1.0 / (1.0 + total))
    urgency = (_term(p.vol_weight, vol, p.vol_threshold, p.vol_scale)
               + _term(p.toxicity_weight, tox, p.toxicity_threshold, p.toxicity_scale)
               + _term(p.stress_weight, st_, p.stress_threshold, p.stress_scale))  # fmt: skip
    assert hedge_urgency(p, vol, tox, st_) == 1.0 - 1.0 / (1.0 + urgency)
