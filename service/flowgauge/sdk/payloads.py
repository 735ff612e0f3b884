"""Typed payloads: msgspec Structs mirroring the JSON Schemas in `flowgauge/schema/`.

A test checks every Struct against its schema (same fields, same types, same nullability), so the two
cannot drift apart. Unknown fields are ignored when decoding: v1 grows only by adding fields, and an older
SDK must keep working against a newer daemon. Fields added after v1's first release carry defaults, so a
newer SDK reads an older daemon's payloads too.

    from flowgauge.sdk.payloads import decode
    payload = decode(msg.topic, msg.data)      # MetricsPayload | StatusPayload | TradePayload | AggregatePayload
                                               # | BarPayload
    if isinstance(payload, MetricsPayload) and payload.mid is not None: ...
"""

from __future__ import annotations

from typing import Literal

import msgspec

from flowgauge.publish.topics import RESERVED_VENUES

__all__ = [
    "AggregateExcluded",
    "AggregatePayload",
    "BarPayload",
    "MetricsPayload",
    "StatusPayload",
    "TradePayload",
    "decode",
]

BookState = Literal["SYNCING", "VALID", "INVALID"]
# A status can also say RETIRED (added to v1 after its first release): the instrument expired or was delisted, and
# that status is the last message of the instrument. A metrics payload never carries it (none follows retirement).
StatusState = Literal["SYNCING", "VALID", "INVALID", "RETIRED"]
Trigger = Literal["book", "open_interest", "funding", "liquidation", "long_short"]
# metrics.regime: the OI / price regime of an oi_regime_T field (family positioning).
OiRegime = Literal["NEUTRAL", "LONG_BUILDUP", "SHORT_BUILDUP", "SHORT_COVERING", "LONG_UNWINDING", "LONG_LIQUIDATION"]


class MetricsPayload(msgspec.Struct, frozen=True, kw_only=True):
    """A metrics payload (`flowgauge.v1.<venue>.<slug>`); README "Metric glossary" says what each field is."""

    schema: Literal["flowgauge.v1"]
    venue: str
    symbol: str
    instrument: str
    trigger: Trigger
    seq: int
    book_seq: int | None
    book_state: BookState
    ts_exchange: int
    ts_recv: int
    ts_publish: int
    quality: list[str]
    # field -> "PARTIAL" / "EXHAUSTED" (README "coverage"); empty when every value covers what its name says
    coverage: dict[str, str] = msgspec.field(default_factory=dict)
    bid_px: float | None = None
    bid_sz: float | None = None
    ask_px: float | None = None
    ask_sz: float | None = None
    mid: float | None = None
    spread_bps: float | None = None
    wmid: float | None = None
    depth_imb_1: float | None = None
    depth_imb_5: float | None = None
    depth_imb_10: float | None = None
    depth_imb_20: float | None = None
    depth_bid_10bps: float | None = None
    depth_ask_10bps: float | None = None
    depth_bid_25bps: float | None = None
    depth_ask_25bps: float | None = None
    ofi: float | None = None
    ofi_raw_1s: float | None = None
    ofi_raw_10s: float | None = None
    ofi_raw_60s: float | None = None
    ofi_ew_10s: float | None = None
    tfi_10s: float | None = None
    tfi_60s: float | None = None
    oi: float | None = None
    oi_notional: float | None = None
    oi_chg_pct_5m: float | None = None
    oi_open_ratio_5m: float | None = None
    funding_rate_8h: float | None = None
    premium_bps_live: float | None = None
    mark_price: float | None = None
    index_price: float | None = None
    ls_skew_accounts: float | None = None
    ls_skew_top_positions: float | None = None
    # Family ofi_l1: L1 OFI from the best-quote stream (publish.families; absent when the family is off).
    ofi_l1: float | None = None
    ofi_l1_1s: float | None = None
    ofi_l1_10s: float | None = None
    ofi_l1_60s: float | None = None
    ofi_l1_ew_10s: float | None = None
    source_granularity: str | None = None  # "best_quote" or "derived"
    # Families ofi_ext, mlofi, depth_ext and microprice (publish.families; null or absent when a family is off).
    ofi_notional_1s: float | None = None
    ofi_notional_10s: float | None = None
    ofi_notional_60s: float | None = None
    ofi_notional_300s: float | None = None
    ofi_depthnorm_1s: float | None = None
    ofi_depthnorm_10s: float | None = None
    ofi_depthnorm_60s: float | None = None
    ofi_depthnorm_300s: float | None = None
    ofi_implied_ticks_1s: float | None = None
    ofi_implied_ticks_10s: float | None = None
    ofi_implied_ticks_60s: float | None = None
    ofi_implied_ticks_300s: float | None = None
    ofi_implied_bps_1s: float | None = None
    ofi_implied_bps_10s: float | None = None
    ofi_implied_bps_60s: float | None = None
    ofi_implied_bps_300s: float | None = None
    ofi_ratio_1s: float | None = None
    ofi_ratio_10s: float | None = None
    ofi_ratio_60s: float | None = None
    ofi_ratio_300s: float | None = None
    ofi_z_1s: float | None = None
    ofi_z_10s: float | None = None
    ofi_z_60s: float | None = None
    ofi_z_300s: float | None = None
    cks_beta_1s: float | None = None
    cks_r2_1s: float | None = None
    cks_beta_10s: float | None = None
    cks_r2_10s: float | None = None
    cks_beta_60s: float | None = None
    cks_r2_60s: float | None = None
    cks_beta_x_depth: float | None = None
    mlofi_1s: list[float] | None = None
    mlofi_10s: list[float] | None = None
    mlofi_60s: list[float] | None = None
    mlofi_norm_1s: list[float] | None = None
    mlofi_norm_10s: list[float] | None = None
    mlofi_norm_60s: list[float] | None = None
    ofi_integrated_1s: float | None = None
    ofi_integrated_10s: float | None = None
    ofi_integrated_60s: float | None = None
    ofi_ml_avg_1s: float | None = None
    ofi_ml_avg_10s: float | None = None
    ofi_ml_avg_60s: float | None = None
    di_lvl_5: float | None = None
    di_lvl_10: float | None = None
    di_dist_5bps: float | None = None
    di_dist_10bps: float | None = None
    di_dist_25bps: float | None = None
    di_dist_100bps: float | None = None
    di_dist_250bps: float | None = None
    bi_5bps: float | None = None
    bi_10bps: float | None = None
    bi_25bps: float | None = None
    bi_100bps: float | None = None
    bi_250bps: float | None = None
    qi_l1_ew_10s: float | None = None
    di_lvl_5_ew_10s: float | None = None
    di_dist_10bps_ew_10s: float | None = None
    bi_10bps_ew_10s: float | None = None
    vamp_10bps: float | None = None
    micro_price: float | None = None
    micro_minus_mid_bps: float | None = None
    # Families fragility, ew and risk (publish.families; null or absent when a family is off).
    impact_cost_bps_10k_buy: float | None = None
    impact_cost_bps_10k_sell: float | None = None
    impact_cost_bps_100k_buy: float | None = None
    impact_cost_bps_100k_sell: float | None = None
    impact_cost_bps_1m_buy: float | None = None
    impact_cost_bps_1m_sell: float | None = None
    book_slope_bid: float | None = None
    book_slope_ask: float | None = None
    book_slope: float | None = None
    ofi_stress_1s: float | None = None
    ofi_stress_10s: float | None = None
    ofi_stress_60s: float | None = None
    resiliency_halflife_s: float | None = None
    fragility_index: float | None = None
    spread_bps_ew_60s: float | None = None
    depth_total_10bps_ew_60s: float | None = None
    spread_z: float | None = None
    depth_z: float | None = None
    vol_1m: float | None = None
    micro_drift_bps: float | None = None
    risk_scale: float | None = None
    hedge_urgency: float | None = None
    # Families trade_flow and positioning (publish.families; null or absent when a family is off).
    tfi_vol_100ms: float | None = None
    tfi_notional_100ms: float | None = None
    tfi_count_100ms: float | None = None
    signed_vol_100ms: float | None = None
    signed_notional_100ms: float | None = None
    tfi_ew_100ms: float | None = None
    ti_depthnorm_100ms: float | None = None
    tfi_vol_1s: float | None = None
    tfi_notional_1s: float | None = None
    tfi_count_1s: float | None = None
    signed_vol_1s: float | None = None
    signed_notional_1s: float | None = None
    tfi_ew_1s: float | None = None
    ti_depthnorm_1s: float | None = None
    tfi_vol_10s: float | None = None
    tfi_notional_10s: float | None = None
    tfi_count_10s: float | None = None
    signed_vol_10s: float | None = None
    signed_notional_10s: float | None = None
    tfi_ew_10s: float | None = None
    ti_depthnorm_10s: float | None = None
    tfi_vol_60s: float | None = None
    tfi_notional_60s: float | None = None
    tfi_count_60s: float | None = None
    signed_vol_60s: float | None = None
    signed_notional_60s: float | None = None
    tfi_ew_60s: float | None = None
    ti_depthnorm_60s: float | None = None
    tfi_vol_300s: float | None = None
    tfi_notional_300s: float | None = None
    tfi_count_300s: float | None = None
    signed_vol_300s: float | None = None
    signed_notional_300s: float | None = None
    tfi_ew_300s: float | None = None
    ti_depthnorm_300s: float | None = None
    flow_toxicity: float | None = None
    flow_toxicity_bvc: float | None = None
    flow_toxicity_cdf: float | None = None
    flow_toxicity_bucket_volume: float | None = None
    kyle_lambda_bps_per_musd: float | None = None
    kyle_r2: float | None = None
    kyle_n: float | None = None
    oi_chg_pct_1m: float | None = None
    oi_open_ratio_1m: float | None = None
    oi_consistency_1m: float | None = None
    oi_buildup_score_1m: float | None = None
    oi_unwind_score_1m: float | None = None
    oi_regime_1m: OiRegime | None = None
    oi_consistency_5m: float | None = None
    oi_buildup_score_5m: float | None = None
    oi_unwind_score_5m: float | None = None
    oi_regime_5m: OiRegime | None = None
    oi_chg_pct_1h: float | None = None
    oi_open_ratio_1h: float | None = None
    oi_consistency_1h: float | None = None
    oi_buildup_score_1h: float | None = None
    oi_unwind_score_1h: float | None = None
    oi_regime_1h: OiRegime | None = None
    oi_chg_pct_4h: float | None = None
    oi_open_ratio_4h: float | None = None
    oi_consistency_4h: float | None = None
    oi_buildup_score_4h: float | None = None
    oi_unwind_score_4h: float | None = None
    oi_regime_4h: OiRegime | None = None
    oi_to_volume_24h: float | None = None
    oi_price_corr_4h: float | None = None
    funding_ann: float | None = None
    funding_pressure: float | None = None
    funding_pressure_z: float | None = None
    ls_skew_accounts_z: float | None = None
    ls_skew_top_positions_z: float | None = None
    liq_imbalance_1m: float | None = None
    liq_intensity_1m: float | None = None
    liq_oi_share_1m: float | None = None
    n_liq_msgs_1m: float | None = None
    liq_imbalance_5m: float | None = None
    liq_intensity_5m: float | None = None
    liq_oi_share_5m: float | None = None
    n_liq_msgs_5m: float | None = None
    liq_imbalance_1h: float | None = None
    liq_intensity_1h: float | None = None
    liq_oi_share_1h: float | None = None
    n_liq_msgs_1h: float | None = None
    liq_long_ew_5m: float | None = None
    liq_short_ew_5m: float | None = None
    liq_imbalance_ew_5m: float | None = None
    liq_side: Literal["long", "short"] | None = None
    liq_price: float | None = None
    liq_size: float | None = None
    liq_notional: float | None = None


class StatusPayload(msgspec.Struct, frozen=True, kw_only=True):
    """A book status (`flowgauge.v1.status.<venue>.<slug>`): a sync-state change or a periodic heartbeat."""

    schema: Literal["flowgauge.v1"]
    venue: str
    symbol: str
    instrument: str
    state: StatusState
    reason: str | None
    detail: str
    resyncs: int
    ts_exchange: int
    ts_recv: int
    ts_publish: int
    heartbeat: bool = False
    ts_last_update: int | None = None


class TradePayload(msgspec.Struct, frozen=True, kw_only=True):
    """A trade or liquidation (`flowgauge.v1.trades.<venue>.<slug>`, published with `publish.trades`)."""

    schema: Literal["flowgauge.v1"]
    kind: Literal["trade", "liquidation"]
    venue: str
    symbol: str
    instrument: str
    trade_id: str | None
    side: Literal["buy", "sell"]
    price: float
    size: float
    notional: float
    forced: bool
    liq_side: Literal["long", "short"] | None
    ts_exchange: int
    ts_recv: int
    ts_publish: int


class AggregateExcluded(msgspec.Struct, frozen=True, kw_only=True):
    """An instrument of the base left out of an aggregate, and why."""

    venue: str
    symbol: str
    reason: Literal["INVALID", "STALE", "CLOCK_SKEW", "NO_DATA"]
    ts_exchange: int | None  # its latest payload's exchange time; None before any


class AggregatePayload(msgspec.Struct, frozen=True, kw_only=True):
    """A cross-venue aggregate (`flowgauge.v1.agg.<BASE>`): one base asset's perpetuals over every venue, at one
    multiple of `interval_ms` of exchange time (README "Cross-venue aggregates")."""

    schema: Literal["flowgauge.v1"]
    base: str
    seq: int
    ts_exchange: int
    ts_publish: int
    interval_ms: float
    venues: list[str]  # venues counted
    instruments: list[str]  # counted instruments as "venue:symbol"
    excluded: list[AggregateExcluded]
    oi_notional: float | None
    oi_share: dict[str, float]  # venue -> fraction of oi_notional
    ofi_notional_1s: float | None
    ofi_notional_10s: float | None
    ofi_notional_60s: float | None
    depth_bid_10bps: float | None
    depth_ask_10bps: float | None
    depth_bid_25bps: float | None
    depth_ask_25bps: float | None
    mid_median: float | None
    premium_bps: dict[str, float]  # "venue:symbol" -> bps over mid_median
    premium_dispersion_bps: float | None
    premium_range_bps: float | None


BarQuality = Literal["WARMUP", "GAP", "RESET", "PARTIAL_WINDOW"]


class BarPayload(msgspec.Struct, frozen=True, kw_only=True):
    """A closed clock bar (`flowgauge.v1.bars.<venue>.<slug>`, publish.bars); README "Topics and payloads"."""

    schema: Literal["flowgauge.v1"]
    venue: str
    symbol: str
    instrument: str
    seq: int
    bar_s: float
    t_start: int
    t_end: int
    n_events: int
    n_trades: int
    mid_open: float | None
    mid_high: float | None
    mid_low: float | None
    mid_close: float | None
    ret_bps: float | None
    ofi: float
    buy_volume: float
    sell_volume: float
    spread_bps: float | None
    ofi_z: float | None
    ret_z: float | None
    spread_z: float | None
    quality: list[BarQuality]
    ts_publish: int


_DECODERS: dict[str, msgspec.json.Decoder[object]] = {
    "metrics": msgspec.json.Decoder(MetricsPayload),
    "status": msgspec.json.Decoder(StatusPayload),
    "trades": msgspec.json.Decoder(TradePayload),
    "agg": msgspec.json.Decoder(AggregatePayload),
    "bars": msgspec.json.Decoder(BarPayload),
}


def _family(topic: str) -> str:
    tokens = topic.split(".")
    if len(tokens) == 5 and tokens[2] in _DECODERS and tokens[2] != "metrics":
        return tokens[2]
    if len(tokens) == 4 and tokens[2] not in RESERVED_VENUES:
        return "metrics"
    if len(tokens) == 4 and tokens[2] == "agg":
        return "agg"
    raise ValueError(f"no typed payload for topic {topic!r}")


def decode(topic: str, data: bytes) -> object:
    """The payload published on `topic` as its Struct.

    Raises:
        ValueError: a topic family without a typed payload.
        msgspec.ValidationError: a payload that does not match (a required field missing, a wrong type).
    """
    return _DECODERS[_family(topic)].decode(data)
