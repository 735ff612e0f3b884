"""Scrape-time Prometheus collector for the signal gauges (imbalances, OI, funding, spread, book state).

Sits in `flowgauge.telemetry`: at each scrape it reads the latest payload per instrument from a
`SignalSource` (the engine's latest-value store) and yields fresh gauge families, so the hot path does no
`.set()` work and instruments that disappear from the source disappear from `/metrics`. Must not keep series
of its own, must not invent a value (a `None` in the payload means "undefined", so that series is simply
absent), and must not take label values from payload contents: the metric keys it exports are a closed,
configured table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "BOOK_STATES",
    "DEFAULT_DEPTH_LEVELS",
    "DEFAULT_OFI_EW_WINDOWS",
    "DEFAULT_OFI_WINDOWS",
    "DEFAULT_TFI_WINDOWS",
    "AggregateCollector",
    "AggregateSource",
    "SignalCollector",
    "SignalSource",
]

DEFAULT_DEPTH_LEVELS: tuple[int, ...] = (1, 5, 10, 20)
DEFAULT_OFI_WINDOWS: tuple[str, ...] = ("1s", "10s", "60s")
DEFAULT_OFI_EW_WINDOWS: tuple[str, ...] = ("10s",)
DEFAULT_TFI_WINDOWS: tuple[str, ...] = ("10s", "60s")

# flowgauge_book_state is a state set (OpenMetrics StateSet, exposed as a gauge with a `state` label): one series
# per state, 1 for the book's current state and 0 for the others. Two more series per book than a state code,
# but `flowgauge_book_state{state="VALID"} == 0` and `sum by (state)` need no knowledge of an encoding, and a
# state added later is a new label value, not a renumbering.
BOOK_STATES: tuple[str, ...] = ("VALID", "SYNCING", "INVALID")

_BPS_PER_UNIT = 1e4


class SignalSource(Protocol):
    """What the collector reads at scrape time; implemented by the metrics engine's latest-value store.

    Both methods are called on the event-loop thread during a scrape and must be cheap and non-blocking.
    """

    def latest_signals(self) -> Iterable[tuple[str, str, Mapping[str, object]]]:
        """Yield `(venue, symbol, latest payload)` per instrument.

        The payload carries the metric keys (`depth_imb_<levels>`, `ofi_raw_<window>`, `ofi_ew_<window>`,
        `tfi_<window>`, `oi`, `oi_notional`, `funding_rate_8h`, `premium_bps_live`, `spread_bps`, `mid`,
        `ts_exchange` in integer nanoseconds); a key that is missing or None is not exported.
        """
        ...

    def book_states(self) -> Iterable[tuple[str, str, str]]:
        """Yield `(venue, symbol, state)` per book, state one of `SYNCING`, `VALID`, `INVALID`."""
        ...


# Family ids -> (metric name, HELP, extra label name or None). Every HELP states the unit.
_FAMILIES: dict[str, tuple[str, str, str | None]] = {
    "depth": (
        "flowgauge_depth_imbalance",
        "Depth imbalance (bid size - ask size) / (bid size + ask size) over the top `levels` price levels of "
        "each side; unitless ratio in [-1, 1], positive = more resting bids.",
        "levels",
    ),
    "ofi": (
        "flowgauge_ofi",
        "Order-flow imbalance (Cont-Kukanov-Stoikov) summed over `window`, in base-asset units; window "
        "'ew<T>' is a decayed sum mass-equivalent to T. Positive = buying pressure.",
        "window",
    ),
    "tfi": (
        "flowgauge_trade_flow_imbalance",
        "Trade-flow imbalance (taker buy volume - taker sell volume) / (buy + sell) over `window`; unitless "
        "ratio in [-1, 1], positive = net taker buying.",
        "window",
    ),
    "oi": (
        "flowgauge_open_interest",
        "Open interest, one-sided (long = short), in base-asset units.",
        None,
    ),
    "oi_notional": (
        "flowgauge_open_interest_notional",
        "Open interest, one-sided, in quote currency (base units x mark price).",
        None,
    ),
    "funding": (
        "flowgauge_funding_rate_8h",
        "Predicted funding rate rescaled to an 8-hour interval, as a fraction (0.0001 = 1 bp per 8 h).",
        None,
    ),
    # Prometheus names carry base units and ratios (not percent or bps): the payload's *_bps keys are divided
    # by 10,000 here (a dashboard shows bps by multiplying back).
    "premium": (
        "flowgauge_premium_ratio",
        "Live premium of the perpetual mid over the index price, (mid - index) / index, as a ratio "
        "(0.0001 = 1 bp).",
        None,
    ),
    "spread": (
        "flowgauge_book_spread_ratio",
        "Best ask - best bid relative to mid, as a ratio (0.0001 = 1 bp).",
        None,
    ),
    "mid": (
        "flowgauge_mid_price",
        "Mid price (best bid + best ask) / 2, in quote currency.",
        None,
    ),
    "last_update": (
        "flowgauge_book_last_update_timestamp_seconds",
        "Exchange timestamp of the last book update, in seconds since the Unix epoch "
        "(alert on time() - this).",
        None,
    ),
    "state": (
        "flowgauge_book_state",
        "Book sync state as a state set: 1 on the series of the book's current state (VALID, SYNCING or "
        "INVALID), 0 on the others (boolean).",
        "state",
    ),
}

_NS_PER_S = 1e9


def _number(value: object) -> float | None:
    """The float to export, or None for a value that must not be exported (None, bool, non-numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class SignalCollector(Collector):
    """Custom collector turning a `SignalSource` into the signal gauge families at scrape time.

    Args:
        source: the engine's latest-value store.
        depth_levels: the configured depth-imbalance levels (`depth_imb_<n>` keys, label `levels`).
        ofi_windows: windows of `ofi_raw_<w>` keys (label `window=<w>`).
        ofi_ew_windows: windows of `ofi_ew_<w>` keys (label `window=ew<w>`).
        tfi_windows: windows of `tfi_<w>` keys (label `window=<w>`).

    The key table is fixed at construction, so the series count is
    `instruments x (|levels| + |ofi windows| + |ofi ew windows| + |tfi windows| + 7 + |BOOK_STATES|)` and never
    grows with payload contents.
    Register it with `registry.register(SignalCollector(source))`.
    """

    def __init__(
        self,
        source: SignalSource,
        *,
        depth_levels: Sequence[int] = DEFAULT_DEPTH_LEVELS,
        ofi_windows: Sequence[str] = DEFAULT_OFI_WINDOWS,
        ofi_ew_windows: Sequence[str] = DEFAULT_OFI_EW_WINDOWS,
        tfi_windows: Sequence[str] = DEFAULT_TFI_WINDOWS,
    ) -> None:
        self._source = source
        # payload key -> (family id, extra label value or None)
        keys: dict[str, tuple[str, str | None]] = {}
        for n in depth_levels:
            keys[f"depth_imb_{n}"] = ("depth", str(n))
        for w in ofi_windows:
            keys[f"ofi_raw_{w}"] = ("ofi", w)
        for w in ofi_ew_windows:
            keys[f"ofi_ew_{w}"] = ("ofi", f"ew{w}")
        for w in tfi_windows:
            keys[f"tfi_{w}"] = ("tfi", w)
        keys.update({
            "oi": ("oi", None),
            "oi_notional": ("oi_notional", None),
            "funding_rate_8h": ("funding", None),
            "premium_bps_live": ("premium", None),
            "spread_bps": ("spread", None),
            "mid": ("mid", None),
            "ts_exchange": ("last_update", None),
        })
        self._keys = keys

    @staticmethod
    def _new_families() -> dict[str, GaugeMetricFamily]:
        families = {}
        for fid, (name, help_text, extra) in _FAMILIES.items():
            labels = ["venue", "symbol"] if extra is None else ["venue", "symbol", extra]
            families[fid] = GaugeMetricFamily(name, help_text, labels=labels)
        return families

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Names only (no source read), so the registry can reject duplicate names at register time."""
        yield from self._new_families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._new_families()
        keys = self._keys
        for venue, symbol, payload in self._source.latest_signals():
            for key, (fid, extra) in keys.items():
                value = _number(payload.get(key))
                if value is None:
                    continue
                if fid == "last_update":
                    value /= _NS_PER_S
                elif fid in ("premium", "spread"):
                    value /= _BPS_PER_UNIT
                labels = [venue, symbol] if extra is None else [venue, symbol, extra]
                families[fid].add_metric(labels, value)
        state_family = families["state"]
        for venue, symbol, state in self._source.book_states():
            current = str(state)
            if current not in BOOK_STATES:
                continue  # not a book state this exporter knows: no series rather than a made-up one
            for name in BOOK_STATES:
                state_family.add_metric([venue, symbol, name], 1.0 if name == current else 0.0)
        yield from families.values()


class ClockSource(Protocol):
    """What `ClockOffsetCollector` reads at scrape time (the engine): cheap, non-blocking, on the loop thread."""

    def clock_offsets(self) -> Iterable[tuple[str, float]]:
        """Yield `(venue, seconds)` for every venue whose clock offset has an estimate."""
        ...


class ClockOffsetCollector(Collector):
    """`flowgauge_venue_clock_offset_seconds{venue}`: each venue's estimated clock offset, read at scrape time.

    One series per venue once the engine has an estimate (a venue before its first frames has none).
    """

    NAME = "flowgauge_venue_clock_offset_seconds"
    HELP = (
        "Estimated offset of the venue's clock: median of ts_recv - ts_exchange over its recent book and trade "
        "frames, in seconds (network delay included; positive = the venue's stamps lag our clock). Payloads "
        "carry CLOCK_SKEW while its magnitude exceeds venues.<id>.clock_skew_max_s."
    )

    def __init__(self, source: ClockSource) -> None:
        self._source = source

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=["venue"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["venue"])
        for venue, seconds in self._source.clock_offsets():
            family.add_metric([venue], seconds)
        yield family


class AggregateSource(Protocol):
    """What `AggregateCollector` reads at scrape time (`metrics.aggregate.CrossVenueAggregates`): cheap, on the
    loop thread."""

    def latest(self) -> Iterable[tuple[str, Mapping[str, object]]]:
        """Yield `(base, last aggregate payload)` per base asset that has published one."""
        ...


# Aggregate payload key -> (metric name, HELP). One series per base asset (label `base` only: the configured
# perpetuals' base currencies, a handful), so the whole table adds |bases| x 6 series.
_AGGREGATE_FAMILIES: dict[str, tuple[str, str]] = {
    "oi_notional": (
        "flowgauge_agg_open_interest_notional",
        "Open interest of the base asset's perpetuals summed over the venues counted in its cross-venue aggregate, "
        "one-sided, in quote currency (USD, USDT and USDC taken as equal).",
    ),
    "ofi_notional_10s": (
        "flowgauge_agg_ofi_notional_10s",
        "Order-flow imbalance over the last 10 s times mid, summed over the counted venues, in quote currency; "
        "positive = buying pressure.",
    ),
    "depth_total_10bps": (
        "flowgauge_agg_depth_notional_10bps",
        "Resting bid + ask notional within 10 bps of each venue's mid, summed over the counted venues, in quote "
        "currency.",
    ),
    "premium_dispersion_bps": (
        "flowgauge_agg_premium_dispersion_ratio",
        "Root mean square of the counted venues' mid premiums over their cross-venue median mid, as a ratio "
        "(0.0001 = 1 bp; the payload's premium_dispersion_bps / 1e4); absent with fewer than two venues.",
    ),
    "venues_counted": (
        "flowgauge_agg_venues_counted",
        "Venues counted in the base asset's latest cross-venue aggregate (VALID book, not stale), a count.",
    ),
    "ts_exchange": (
        "flowgauge_agg_last_timestamp_seconds",
        "Exchange time of the base asset's latest cross-venue aggregate, in seconds since the Unix epoch.",
    ),
}


class AggregateCollector(Collector):
    """The headline cross-venue aggregate values as gauges labelled by `base` only, read at scrape time."""

    def __init__(self, source: AggregateSource) -> None:
        self._source = source

    @staticmethod
    def _new_families() -> dict[str, GaugeMetricFamily]:
        return {
            key: GaugeMetricFamily(name, text, labels=["base"]) for key, (name, text) in _AGGREGATE_FAMILIES.items()
        }

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._new_families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._new_families()
        for base, aggregate in self._source.latest():
            bid, ask = _number(aggregate.get("depth_bid_10bps")), _number(aggregate.get("depth_ask_10bps"))
            venues = aggregate.get("venues")
            derived = {
                "depth_total_10bps": bid + ask if bid is not None and ask is not None else None,
                "venues_counted": float(len(venues)) if isinstance(venues, list) else None,
            }
            for key, family in families.items():
                value = derived[key] if key in derived else _number(aggregate.get(key))
                if value is None:
                    continue
                if key == "ts_exchange":
                    value /= _NS_PER_S
                elif key == "premium_dispersion_bps":
                    value /= 1e4  # exported as a ratio, as spread and premium are
                family.add_metric([base], value)
        yield from families.values()
