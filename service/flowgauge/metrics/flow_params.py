"""Parameters of the "trade_flow" and "positioning" families (issue 11 items 6, 7), metrics.md section 9 defaults.

Pure data, the same shape as `metrics.params` (frozen msgspec structs, unknown keys refused). Field names are
fixed by the families; a parameter changes how a value is computed, never which keys exist.
"""

from __future__ import annotations

import msgspec

__all__ = ["KyleParams", "PositioningParams", "ToxicityParams", "TradeFlowParams"]


class ToxicityParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """metrics.md 5.2, published under neutral names (`flow_toxicity*`)."""

    buckets_per_day: int = 50  # n_day: bucket volume V = ADV / n_day
    window_buckets: int = 50  # n: buckets in the imbalance average
    adv_days: int = 7  # ADV = mean of the last adv_days 24 h volumes, re-set at 00:00 UTC
    # Until a 24 h volume has been observed (and with no venue figure given): the bootstrap daily volume, quote
    # notional, turned into base units with the first trade's price. No recording carries a venue 24 h volume.
    bootstrap_daily_notional: float = 1e9
    bvc_bar_s: int = 60  # BVC time bars
    bvc_sigma_half_life_s: float = 86400.0  # EW std of the bar price changes (BVC's sigma)
    cdf_days: float = 30.0  # flow_toxicity_cdf: empirical CDF against the values of the trailing cdf_days
    cdf_min_values: int = 50  # flow_toxicity_cdf null until this many bucket values are held


class KyleParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """metrics.md 5.3: EW regression of bar price change (bps) on signed trade notional ($1M)."""

    bar_s: int = 60
    half_life_s: float = 1800.0
    min_bars: int = 10  # kyle_* null until this many bars with trades were regressed


class TradeFlowParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """metrics.md 5: TFI family (windows fixed by the field names), toxicity, Kyle's lambda."""

    include_forced: bool = False  # forced prints (liquidation, ADL, block) in tfi_*: off by default (5.1)
    depth_half_life_s: float = 1800.0  # H_AD of the L1 depth behind ti_depthnorm_T (as OFI's AD_ew, section 9)
    toxicity: ToxicityParams = msgspec.field(default_factory=ToxicityParams)
    kyle: KyleParams = msgspec.field(default_factory=KyleParams)


class PositioningParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """metrics.md 6: OI flow and regimes, funding pressure, long/short skew, liquidations."""

    rho_min: float = 0.05  # regime threshold on oi_open_ratio
    d_min: float = 0.05  # regime threshold on the taker imbalance d
    regime_confirm_windows: int = 2  # a new (non-neutral) regime must hold this many consecutive windows
    liquidation_share: float = 0.2  # LONG_UNWINDING becomes LONG_LIQUIDATION above this liquidated-long share of V
    consistency_tolerance: float = 0.02  # |dOI| / V above 1 + tol flags OI_INCONSISTENT
    funding_base_8h: float = 0.0001  # F_base: the venue's interest component per 8 h (0.01 %, Binance)
    funding_scale: float = 0.0005  # F_scale: the clamp width (0.05 %)
    funding_z_half_life_s: float = 7 * 86400.0
    ls_z_half_life_s: float = 30 * 86400.0
    oi_price_corr_half_life_s: float = 4 * 3600.0  # oi_price_corr_4h EW half-life (1 min bars)
    z_min_weight: float = 0.95  # z-scores null until their EW weight reaches this (about 4.3 half-lives)
    sampled_liquidation_venues: tuple[str, ...] = ("binanceusdm",)  # liq_* are lower bounds: SAMPLED_INPUT
