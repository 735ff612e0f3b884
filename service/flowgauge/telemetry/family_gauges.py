"""Scrape-time gauges for the headline fields of the metric families beyond core (`http.metrics_families`).

Sits in `flowgauge.telemetry` beside `SignalCollector` (which exports core's fields) and reads the same source: the
engine's latest payload per instrument. Each family has a fixed table of a few headline payload keys, so an
instrument costs a known, small number of series whatever the payload holds (no per-level vector, no per-band or
per-window sweep: at most a few fixed windows); a family that is not selected has no metric at all, not even a HELP
line. Values are never invented: a key that is missing or null in the payload has no series. Labels are `venue`,
`symbol` and, for a few metrics, one more label from a closed set (`window`, `levels`, `band`, `side`, `state`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from flowgauge.metrics.regime import REGIMES
from flowgauge.telemetry.collector import SignalSource

__all__ = ["DEFAULT_EXPORTED_FAMILIES", "GAUGES", "FamilyCollector", "series_per_instrument"]

_BPS = 1e-4  # a *_bps payload value exported as a ratio, as flowgauge_book_spread_ratio is


class Gauge(NamedTuple):
    """One payload key's gauge: metric name and HELP (with its unit), an optional (label, value), a scale."""

    key: str
    name: str
    help: str
    label: tuple[str, str] | None = None
    scale: float = 1.0


def _windows(key: str, name: str, help_text: str, windows: Iterable[str], scale: float = 1.0) -> list[Gauge]:
    return [Gauge(key.format(w=w), name, help_text, ("window", w.replace("ew_", "ew")), scale) for w in windows]


_OFI_L1_HELP = (
    "L1 order-flow imbalance from the venue's best-quote stream (or derived from the book top where there is none) "
    "summed over `window`, in base-asset units; window 'ew10s' is a decayed sum mass-equivalent to 10 s. Positive = "
    "buying pressure."
)
_IMPACT_HELP = (
    "Cost of a market order of 100,000 quote walking the visible book on `side`: (VWAP - mid) / mid, as a ratio "
    "(the payload's impact_cost_bps_100k_* / 1e4), half-spread included; absent when the side holds less."
)

GAUGES: dict[str, tuple[Gauge, ...]] = {
    "ofi_l1": tuple(_windows("ofi_l1_{w}", "flowgauge_ofi_l1", _OFI_L1_HELP, ("1s", "10s", "60s", "ew_10s"))),
    "ofi_ext": (
        *_windows("ofi_ratio_{w}", "flowgauge_ofi_ratio",
                  "Sum of ofi over `window` / sum of |ofi|; unitless ratio in [-1, 1].", ("10s", "60s")),
        Gauge("ofi_implied_bps_10s", "flowgauge_ofi_implied_move_ratio",
              "Relative mid move the 10 s summed ofi implies in the Cont-Kukanov-Stoikov model, as a ratio "
              "(the payload's ofi_implied_bps_10s / 1e4).", ("window", "10s"), _BPS),
        Gauge("cks_r2_10s", "flowgauge_cks_r2",
              "R^2 of the streaming regression of each 10 s clock bar's mid change on its summed ofi; ratio in "
              "[0, 1].", ("window", "10s")),
    ),
    "mlofi": tuple(_windows(
        "ofi_integrated_{w}", "flowgauge_ofi_integrated",
        "Integrated multi-level OFI over `window`: weighted mean of the depth-normalised per-level OFI; unitless "
        "ratio (equal weights unless metrics.integrated_ofi.weights is set).", ("10s", "60s"),
    )),
    "depth_ext": (
        Gauge("di_lvl_10", "flowgauge_depth_imbalance_level_weighted",
              "Depth imbalance over the best `levels` levels with weights exp(-(m-1)/3); unitless ratio in [-1, 1].",
              ("levels", "10")),
        Gauge("bi_10bps", "flowgauge_band_imbalance",
              "Resting bid vs ask size within `band` of the mid, (bid - ask) / (bid + ask); unitless ratio in "
              "[-1, 1].", ("band", "10bps")),
        Gauge("vamp_10bps", "flowgauge_vamp_price",
              "Volume-adjusted mid price over the level pairs within `band` of the mid, in quote currency.",
              ("band", "10bps")),
    ),
    "microprice": (
        Gauge("micro_price", "flowgauge_micro_price",
              "Stoikov micro-price (or its documented fallback), in quote currency."),
        Gauge("micro_minus_mid_bps", "flowgauge_micro_minus_mid_ratio",
              "(micro-price - mid) / mid, as a ratio (the payload's micro_minus_mid_bps / 1e4); positive = next "
              "moves expected up.", None, _BPS),
    ),
    "trade_flow": (
        Gauge("flow_toxicity", "flowgauge_flow_toxicity",
              "Volume-bucket order-flow toxicity: mean |taker sell - taker buy| / bucket volume over the last 50 "
              "buckets; unitless ratio in [0, 1]."),
        Gauge("kyle_lambda_bps_per_musd", "flowgauge_kyle_lambda",
              "Kyle's lambda: relative price change per unit of signed taker notional, as a ratio per quote unit "
              "(the payload's kyle_lambda_bps_per_musd / 1e10).", None, 1e-10),
    ),
    "positioning": (
        Gauge("oi_buildup_score_5m", "flowgauge_oi_buildup_score",
              "OI build-up score over `window`: positive = long build-up, negative = short build-up; unitless "
              "ratio in [-1, 1].", ("window", "5m")),
        Gauge("oi_unwind_score_5m", "flowgauge_oi_unwind_score",
              "OI unwind score over `window`: positive = short covering, negative = long unwinding; unitless "
              "ratio in [-1, 1].", ("window", "5m")),
        Gauge("funding_pressure", "flowgauge_funding_pressure",
              "tanh of the predicted 8 h funding rate against its neutral level; unitless ratio in (-1, 1), "
              "positive = longs pay."),
        Gauge("liq_imbalance_5m", "flowgauge_liquidation_imbalance",
              "(liquidated shorts - liquidated longs) / their sum over `window`, notional; unitless ratio in "
              "[-1, 1], positive = forced buying.", ("window", "5m")),
        # oi_regime_5m, a label, as a state set: one series per regime, 1 on the current one (see _state_set).
        *(Gauge("oi_regime_5m", "flowgauge_oi_regime",
                "OI regime over 5 minutes as a state set: 1 on the series of the current regime, 0 on the others "
                "(boolean); no series while the regime is undefined.", ("state", regime)) for regime in REGIMES),
    ),
    "fragility": (
        Gauge("fragility_index", "flowgauge_fragility_index",
              "tanh(mean(spread z-score, -depth z-score) / 2): positive = wider and thinner than usual; unitless "
              "ratio in [-1, 1]."),
        Gauge("impact_cost_bps_100k_buy", "flowgauge_impact_cost_100k_ratio", _IMPACT_HELP, ("side", "buy"), _BPS),
        Gauge("impact_cost_bps_100k_sell", "flowgauge_impact_cost_100k_ratio", _IMPACT_HELP, ("side", "sell"), _BPS),
        Gauge("ofi_stress_10s", "flowgauge_ofi_stress",
              "|ofi over `window` x mid| / notional resting within 10 bps of the mid; unitless ratio >= 0.",
              ("window", "10s")),
        Gauge("resiliency_halflife_s", "flowgauge_resiliency_halflife_seconds",
              "Estimated half-life of the book's recovery after a liquidity shock, in seconds."),
    ),
    "ew": (
        Gauge("spread_z", "flowgauge_spread_z", "Spread against its 24 h EW statistics, a z-score (unitless)."),
        Gauge("depth_z", "flowgauge_depth_z",
              "ln(depth within 10 bps) against its 24 h EW statistics, a z-score (unitless)."),
    ),
    "risk": (
        Gauge("vol_1m", "flowgauge_volatility_1m_per_sqrt_second",
              "EW RMS of 1 s log mid returns (one-minute mass), as a ratio per square-root second (the payload's "
              "vol_1m / 1e4); x sqrt(T) is the T-second volatility.", None, _BPS),
        Gauge("micro_drift_bps", "flowgauge_micro_drift_ratio",
              "(micro-price - mid) / mid, as a ratio (the payload's micro_drift_bps / 1e4).", None, _BPS),
        Gauge("risk_scale", "flowgauge_risk_scale",
              "Position-size multiplier in (0, 1]: 1 in normal conditions, lower as toxicity, OFI stress, fragility "
              "and one-sided OI pressure rise (unitless)."),
        Gauge("hedge_urgency", "flowgauge_hedge_urgency",
              "Hedge urgency in [0, 1]: 0 in normal conditions, toward 1 as volatility, toxicity and OFI stress "
              "rise (unitless)."),
    ),
}  # fmt: skip
"""Family -> its headline gauges (families of metrics.families.FAMILIES but core, whose fields SignalCollector
exports). A gauge's series count per instrument is fixed here: one per entry."""

DEFAULT_EXPORTED_FAMILIES: tuple[str, ...] = ("ofi_l1", "microprice", "risk")
"""The families whose gauges /metrics exports when `http.metrics_families` is not set: the headline families of the
default payload (publish.families), 10 series per instrument."""


def series_per_instrument(families: Iterable[str]) -> int:
    """Series one instrument adds with every headline field of `families` defined (a state set counts in full)."""
    return sum(len(GAUGES.get(name, ())) for name in set(families))


class FamilyCollector(Collector):
    """The headline gauges of the selected families, built at scrape time from the engine's latest payloads.

    Args:
        source: the engine's latest-value store (as for `SignalCollector`).
        families: the families to export; names without gauges ("core") are ignored.
    """

    def __init__(self, source: SignalSource, families: Iterable[str]) -> None:
        self._source = source
        wanted = set(families)
        self._gauges = [gauge for name, gauges in GAUGES.items() if name in wanted for gauge in gauges]

    def _new_families(self) -> dict[str, GaugeMetricFamily]:
        out: dict[str, GaugeMetricFamily] = {}
        for gauge in self._gauges:
            if gauge.name not in out:
                labels = ["venue", "symbol"] if gauge.label is None else ["venue", "symbol", gauge.label[0]]
                out[gauge.name] = GaugeMetricFamily(gauge.name, gauge.help, labels=labels)
        return out

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Names only (no source read), so the registry rejects a duplicate name at register time."""
        yield from self._new_families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._new_families()
        for venue, symbol, payload in self._source.latest_signals():
            for gauge in self._gauges:
                value = _value(gauge, payload)
                if value is None:
                    continue
                labels = [venue, symbol] if gauge.label is None else [venue, symbol, gauge.label[1]]
                families[gauge.name].add_metric(labels, value)
        yield from families.values()


def _value(gauge: Gauge, payload: Mapping[str, object]) -> float | None:
    """The gauge's sample for this payload, None for no series (missing, null, not a number)."""
    raw = payload.get(gauge.key)
    if gauge.label is not None and gauge.label[0] == "state":
        # a state set: every state of a defined regime has a series, 1 on the current one
        return None if not isinstance(raw, str) or raw not in REGIMES else float(raw == gauge.label[1])
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return float(raw) * gauge.scale
