"""Maker risk and position-sizing signals (issue 11 item 11): `micro_drift_bps`, `risk_scale`, `hedge_urgency`,
and the spec's optional `fragility_index` (metrics.md §7) they use.

Pure functions of numbers already in the payload (plain float arithmetic, no state), so both cores compute them
alike from the same inputs. docs/metrics.md "Maker risk and sizing" gives the formulas and why.

Every stress input `x` is turned into a penalty `p = max(0, (x - threshold) / scale)`: 0 in normal conditions
(below its threshold), growing linearly beyond. An input that is None (its family off, not warm yet, or undefined
now) adds no penalty: the signals then say "normal" for that input, never "dangerous" for want of data.

* `risk_scale = max(floor, 1 / (1 + sum w_i p_i))` over toxicity, OFI stress, fragility and one-sided OI
  pressure: 1 in normal conditions, falling toward `floor` (> 0) as any of them rises; non-increasing in each.
* `hedge_urgency = P / (1 + P)`, `P = sum w_j p_j` over volatility (vol_1m relative to its long-run level),
  toxicity and OFI stress: 0 in normal conditions, toward 1 as they rise.
"""

from __future__ import annotations

import math

from flowgauge.metrics.params import RiskParams

__all__ = ["RiskParams", "fragility_index", "hedge_urgency", "micro_drift_bps", "penalty", "risk_scale"]


def penalty(x: float | None, threshold: float, scale: float) -> float:
    """`max(0, (x - threshold) / scale)`; 0 for None or NaN (no evidence of stress), +inf stays +inf."""
    if x is None or not x > threshold:
        return 0.0
    return (x - threshold) / scale


def _term(weight: float, x: float | None, threshold: float, scale: float) -> float:
    """`weight * penalty`, with a weight of 0 switching the input off even when it is +inf (0 * inf is NaN)."""
    if weight == 0.0:
        return 0.0
    return weight * penalty(x, threshold, scale)


def micro_drift_bps(micro_price: float | None, mid: float | None) -> float | None:
    """`(micro_price - mid) / mid * 1e4`: where the micro-price expects the mid to go, in bps (+ = up). None
    without a micro-price (its fallback, metrics.md §4.2) or a mid."""
    if micro_price is None or mid is None or not mid > 0.0:
        return None
    return (micro_price - mid) / mid * 1e4


def fragility_index(spread_z: float | None, depth_z: float | None, resiliency_z: float | None = None,
                    kyle_lambda_z: float | None = None) -> float | None:  # fmt: skip
    """metrics.md §7 (optional, [P]): `tanh(mean(z) / 2)` over the z-scores there are of `spread_bps`,
    `-ln depth_total_10bps` (so `depth_z` enters negated), `resiliency_halflife_s` and `kyle_lambda`; in [-1, 1],
    + = more fragile than usual. None when none is available."""
    total = 0.0
    n = 0
    for z in (spread_z, None if depth_z is None else -depth_z, resiliency_z, kyle_lambda_z):
        if z is not None and math.isfinite(z):
            total += z
            n += 1
    if n == 0:
        return None
    return math.tanh(total / n / 2.0)


def risk_scale(p: RiskParams, toxicity: float | None, stress: float | None, fragility: float | None,
               oi_pressure: float | None) -> float:  # fmt: skip
    """The size multiplier in [floor, 1] (see the module docstring). `oi_pressure` is signed (e.g. the OI build-up
    score): one-sidedness is its absolute value."""
    # Each term is _term(...) written out (the risk family runs this on every payload of the default families):
    # an input that is None, at or below its threshold, or weighted 0 adds exactly 0.0.
    total = 0.0
    w = p.toxicity_weight
    if toxicity is not None and w != 0.0 and toxicity > p.toxicity_threshold:
        total += w * ((toxicity - p.toxicity_threshold) / p.toxicity_scale)
    w = p.stress_weight
    if stress is not None and w != 0.0 and stress > p.stress_threshold:
        total += w * ((stress - p.stress_threshold) / p.stress_scale)
    w = p.fragility_weight
    if fragility is not None and w != 0.0 and fragility > p.fragility_threshold:
        total += w * ((fragility - p.fragility_threshold) / p.fragility_scale)
    w = p.oi_weight
    if oi_pressure is not None and w != 0.0:
        one_sided = abs(oi_pressure)
        if one_sided > p.oi_threshold:
            total += w * ((one_sided - p.oi_threshold) / p.oi_scale)
    scale = 1.0 / (1.0 + total)
    return scale if scale > p.floor else p.floor


def hedge_urgency(p: RiskParams, vol_ratio: float | None, toxicity: float | None, stress: float | None) -> float:
    """In [0, 1]: 0 in normal conditions, toward 1 as volatility (vol_1m over its long-run level), toxicity and
    OFI stress rise (see the module docstring)."""
    total = 0.0  # as in risk_scale: _term(...) written out
    w = p.vol_weight
    if vol_ratio is not None and w != 0.0 and vol_ratio > p.vol_threshold:
        total += w * ((vol_ratio - p.vol_threshold) / p.vol_scale)
    w = p.toxicity_weight
    if toxicity is not None and w != 0.0 and toxicity > p.toxicity_threshold:
        total += w * ((toxicity - p.toxicity_threshold) / p.toxicity_scale)
    w = p.stress_weight
    if stress is not None and w != 0.0 and stress > p.stress_threshold:
        total += w * ((stress - p.stress_threshold) / p.stress_scale)
    # 1 - 1/(1 + P), not P/(1 + P): the same number, but rounding keeps this form monotonic in P (addition, division
    # and subtraction are each monotonic in IEEE arithmetic; P/(1 + P) can step down by an ulp as P grows).
    return 1.0 - 1.0 / (1.0 + total)
