"""The metric families: which payload fields exist, grouped so a deployment publishes only the ones it wants.

A family is a name and the tuple of payload keys it adds, in publication order. `publish.families` (config) picks
families; a payload holds the envelope, then the fields of every selected family in the order of `FAMILIES` below
(whatever order the config lists them in), and nothing of the others: their fields are neither computed nor
published. "core" (today's fields, frozen as `core-v1`) is always published.

Each family's owner adds its keys on its own line(s) below. A family whose fields are computed per book event plugs
an object into `metrics.extended` (see its docstring for the protocol); slower families fill their keys in the
accumulator like the core's OI and funding fields.

Keys are fixed: a parameter (`metrics.*` in config, `metrics.params`) changes how a value is computed, never its key.
"""

from __future__ import annotations

from collections.abc import Iterable

from flowgauge.metrics.accumulator import FIELD_NAMES
from flowgauge.metrics.positioning import POSITIONING_FIELDS
from flowgauge.metrics.trade_flow import TRADE_FLOW_FIELDS

__all__ = [
    "ALL",
    "CORE",
    "DEFAULT_FAMILIES",
    "FAMILIES",
    "LIQUIDATION_KEYS",
    "UnknownFamily",
    "family_fields",
    "resolve",
]

CORE = "core"
ALL = "all"

# Which liquidation a `"trigger": "liquidation"` payload reports (null for every other trigger); part of core-v1.
LIQUIDATION_KEYS: tuple[str, ...] = ("liq_side", "liq_price", "liq_size", "liq_notional")

_OFI_WINDOWS = ("1s", "10s", "60s", "300s")  # metrics.md 9: OFI windows (100 ms is ofi_raw / ofi_ew only, 1.3)
_ML_WINDOWS = ("1s", "10s", "60s")  # metrics.md 2.2 / 9: MLOFI windows
_BANDS = ("5bps", "10bps", "25bps", "100bps", "250bps")  # metrics.md 3.2 / 9: depth bands

FAMILIES: dict[str, tuple[str, ...]] = {
    # core-v1, frozen: what the daemon published before families existed.
    CORE: (*FIELD_NAMES, *LIQUIDATION_KEYS),
    # L1 OFI from the best-quote streams (issue 11 item 1).
    "ofi_l1": ("ofi_l1", "ofi_l1_1s", "ofi_l1_10s", "ofi_l1_60s", "ofi_l1_ew_10s", "source_granularity"),
    # metrics.md 1.3: notional, depth-normalised, implied-move, bounded and z-scored OFI per window (the spec's
    # order), streaming CKS regression.
    "ofi_ext": (
        *(f"ofi_notional_{w}" for w in _OFI_WINDOWS),
        *(f"ofi_depthnorm_{w}" for w in _OFI_WINDOWS),
        *(f"ofi_implied_ticks_{w}" for w in _OFI_WINDOWS),
        *(f"ofi_implied_bps_{w}" for w in _OFI_WINDOWS),
        *(f"ofi_ratio_{w}" for w in _OFI_WINDOWS),
        *(f"ofi_z_{w}" for w in _OFI_WINDOWS),
        "cks_beta_1s", "cks_r2_1s", "cks_beta_10s", "cks_r2_10s", "cks_beta_60s", "cks_r2_60s",
        "cks_beta_x_depth",
    ),
    # metrics.md 2.1 / 2.2: per-level OFI vectors (arrays of M numbers), depth-normalised, integrated, averaged.
    "mlofi": (
        *(f"mlofi_{w}" for w in _ML_WINDOWS),
        *(f"mlofi_norm_{w}" for w in _ML_WINDOWS),
        *(f"ofi_integrated_{w}" for w in _ML_WINDOWS),
        *(f"ofi_ml_avg_{w}" for w in _ML_WINDOWS),
    ),
    # metrics.md 3.2: level- and distance-weighted depth imbalance, band imbalance, time-weighted EW versions; 4.3
    # VAMP (depth-aware, auxiliary: it walks the book like the bands do).
    "depth_ext": (
        "di_lvl_5", "di_lvl_10",
        *(f"di_dist_{b}" for b in _BANDS),
        *(f"bi_{b}" for b in _BANDS),
        "qi_l1_ew_10s", "di_lvl_5_ew_10s", "di_dist_10bps_ew_10s", "bi_10bps_ew_10s",
        "vamp_10bps",
    ),
    # metrics.md 4.2: Stoikov micro-price (online estimate, the spec's fallbacks); O(1) per event.
    "microprice": ("micro_price", "micro_minus_mid_bps"),
    # Trade flow and positioning (issue 11 items 6, 7).
    "trade_flow": TRADE_FLOW_FIELDS,  # metrics.md 5: TFI family, flow_toxicity*, Kyle's lambda
    "positioning": POSITIONING_FIELDS,  # metrics.md 6: OI flow and regimes, funding, long/short, liquidations
    # Fragility, EW primitives and z-scores, maker risk (issue 11 items 8, 9, 11).
    "fragility": (
        "impact_cost_bps_10k_buy", "impact_cost_bps_10k_sell", "impact_cost_bps_100k_buy",
        "impact_cost_bps_100k_sell", "impact_cost_bps_1m_buy", "impact_cost_bps_1m_sell",
        "book_slope_bid", "book_slope_ask", "book_slope",
        "ofi_stress_1s", "ofi_stress_10s", "ofi_stress_60s",
        "resiliency_halflife_s", "fragility_index",
    ),
    "ew": ("spread_bps_ew_60s", "depth_total_10bps_ew_60s", "spread_z", "depth_z"),
    "risk": ("vol_1m", "micro_drift_bps", "risk_scale", "hedge_urgency"),
}  # fmt: skip
"""Family name -> its payload keys in publication order; the dict's order is the payload's family order."""

DEFAULT_FAMILIES: tuple[str, ...] = (CORE, "ofi_l1", "microprice", "risk")
"""Published when `publish.families` is not set: today's fields plus the headline additions."""


class UnknownFamily(ValueError):
    """A family name that is not in `FAMILIES` (nor "all")."""


def resolve(names: Iterable[str]) -> tuple[str, ...]:
    """The selected families in `FAMILIES` order, "core" always included, "all" meaning every family.

    Raises:
        UnknownFamily: a name that is neither a family nor "all" (the message lists the known ones).
    """
    wanted = set(names)
    unknown = sorted(wanted - FAMILIES.keys() - {ALL})
    if unknown:
        known = ", ".join((*FAMILIES, ALL))
        raise UnknownFamily(
            f"unknown metric famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(map(repr, unknown))}; known: {known}"
        )
    if ALL in wanted:
        return tuple(FAMILIES)
    wanted.add(CORE)
    return tuple(name for name in FAMILIES if name in wanted)


def family_fields(families: Iterable[str]) -> tuple[str, ...]:
    """The metric keys of a payload publishing `families` (already resolved), in publication order."""
    selected = set(families)
    return tuple(key for name, keys in FAMILIES.items() if name in selected for key in keys)
