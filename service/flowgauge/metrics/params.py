"""Parameters of the metric families (config section `metrics`), with metrics.md section 9's defaults.

One frozen struct per family, gathered in `MetricParams`; config.py builds it from YAML and validates the ranges
(`_check_*` there), the engine hands it to each instrument's `ExtendedMetrics`. A parameter changes how a field is
computed, never which fields exist: field names are fixed by `metrics.families` (a window in a name, e.g. the
`10s` of `ofi_ratio_10s`, is not a parameter).

Pure data: no I/O; the metric layer imports it, config.py (a higher layer) reuses the structs as its sections.
"""

from __future__ import annotations

import msgspec

from flowgauge.metrics.flow_params import PositioningParams, TradeFlowParams

__all__ = [
    "DepthExtParams",
    "EwParams",
    "FragilityParams",
    "IntegratedOfiParams",
    "MetricParams",
    "MicropriceParams",
    "MlofiParams",
    "OfiExtParams",
    "RiskParams",
    "from_settings",
]


class OfiExtParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """metrics.md 1.3: depth-normalised / implied / bounded OFI and the streaming CKS regression."""

    depth_half_life_s: float = 1800.0  # H_AD: time-weighted EW mean of the L1 depth (q^B + q^A)/2
    cks_window_s: float = 1800.0  # regression window W over the 1 s / 10 s / 60 s clock bars; EW, H_W = W ln 2
    z_half_life_s: float = 86400.0  # ofi_z_T: half-life of the EW mean / variance of the T-long bars (8.3: 24 h)
    z_min_samples: int = 30  # ofi_z_T: bars before a z-score is published (and the weight 0.95)


class MlofiParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """metrics.md 2.1 / 2.2: rank-keyed multi-level OFI and its depth normalisation."""

    levels: int = 10  # M, levels per side (1..50)
    min_depth: float = 1e-9  # floor of the common denominator Q^{M,h} (base units); FLOORED_DENOM when hit


class IntegratedOfiParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """metrics.md 2.2: ofi_integrated = w . ofi_norm / ||w||_1.

    `weights` is the first principal component of past depth-normalised MLOFI vectors, fitted offline; empty (the
    default, nothing fitted) means equal weights, i.e. CCZ's simple-average benchmark."""

    weights: tuple[float, ...] = ()  # M numbers, or empty for equal weights


class DepthExtParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """metrics.md 3.2: level- and distance-weighted depth imbalance, band imbalance, EW versions."""

    level_decay: float = 3.0  # kappa: level weight exp(-(m-1)/kappa)
    distance_scale_bps: float = 10.0  # l: distance weight exp(-d/l)


class MicropriceParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """metrics.md 4.2 / 4.3: the Stoikov micro-price estimated online, and VAMP."""

    imbalance_buckets: int = 10  # n_imb (equal-width buckets of I = q^B / (q^B + q^A))
    max_spread_ticks: int = 4  # n_spread: wider spreads publish null (the spec's fallback)
    iterations: int = 6  # terms of G* = sum_k g^k
    sample_ms: int = 1000  # state sampled on this exchange-time clock (dt = 1 sample)
    min_samples: int = 3600  # transitions needed before the first fit (micro_price null until then)
    refit_s: float = 86400.0  # refit period after the first fit
    memory_days: float = 7.0  # transition counts decay with this half-life (the spec's trailing 7 days)


class FragilityParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """metrics.md 7: book slope depth and the resiliency AR(1) (the impact notionals are in the keys)."""

    slope_levels: int = 10  # L, levels per side in book_slope_* (1..1000)
    resiliency_half_life_s: float = 3600.0  # EW mean of ln depth_total_10bps and the AR(1) regression (H = 1 h)


class EwParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """metrics.md 8.3: the EW statistics behind z-scores (spread_z, depth_z, fragility_index)."""

    z_half_life_s: float = 86400.0  # H = 24 h for intraday metrics
    z_min_samples: int = 30  # 1-second samples before a z-score is published (>= 2)


class RiskParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Issue 11 item 11: vol_1m and the penalties of risk_scale / hedge_urgency (docs/metrics.md).

    Each stress input x weighs `weight * max(0, (x - threshold) / scale)`: thresholds are where "normal" ends,
    practitioner defaults [P] to tune on a desk's own replays."""

    vol_half_life_s: float = 41.58883083359672  # vol_1m: EW of squared 1 s returns, 60 s ln 2 (1-minute mass)
    vol_ref_half_life_s: float = 3600.0  # vol_1m's long-run level (metrics.md 8.3: H = 1 h)
    vol_min_samples: int = 10  # 1-second returns before vol_1m is published (>= 1)
    toxicity_threshold: float = 0.4  # flow_toxicity, in [0, 1]
    toxicity_scale: float = 0.2
    toxicity_weight: float = 1.0
    stress_threshold: float = 1.0  # ofi_stress_10s: the 10 s net flow equals all the depth within 10 bps
    stress_scale: float = 1.0
    stress_weight: float = 1.0
    fragility_threshold: float = 0.25  # fragility_index, in (-1, 1)
    fragility_scale: float = 0.25
    fragility_weight: float = 1.0
    oi_threshold: float = 0.2  # |oi_buildup_score_5m|, in [0, 1]
    oi_scale: float = 0.2
    oi_weight: float = 1.0
    vol_threshold: float = 1.5  # vol_1m / its long-run level (hedge_urgency only)
    vol_scale: float = 1.0
    vol_weight: float = 1.0
    floor: float = 0.05  # risk_scale's lower bound, in (0, 1]


class MetricParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Every family's parameters (config `metrics`)."""

    ofi_ext: OfiExtParams = msgspec.field(default_factory=OfiExtParams)
    mlofi: MlofiParams = msgspec.field(default_factory=MlofiParams)
    integrated_ofi: IntegratedOfiParams = msgspec.field(default_factory=IntegratedOfiParams)
    depth_ext: DepthExtParams = msgspec.field(default_factory=DepthExtParams)
    microprice: MicropriceParams = msgspec.field(default_factory=MicropriceParams)
    fragility: FragilityParams = msgspec.field(default_factory=FragilityParams)
    ew: EwParams = msgspec.field(default_factory=EwParams)
    risk: RiskParams = msgspec.field(default_factory=RiskParams)
    trade_flow: TradeFlowParams = msgspec.field(default_factory=TradeFlowParams)  # metrics.flow_params
    positioning: PositioningParams = msgspec.field(default_factory=PositioningParams)


def from_settings(section: object) -> MetricParams:
    """The config's `metrics` section (config.MetricsSettings, the same fields: config imports no metrics module,
    so it keeps its own copy of the structs) as the metric layer's parameters."""
    return msgspec.convert(msgspec.to_builtins(section), MetricParams)
