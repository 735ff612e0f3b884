"""`AggregateCollector`: the headline cross-venue aggregate values as gauges labelled by base only."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flowgauge.metrics.aggregate import CrossVenueAggregates
from flowgauge.telemetry.collector import AggregateCollector

MS = 1_000_000


def _payload(ts: int, mid: float, oi_notional: float) -> dict[str, object]:
    return {"ts_exchange": ts, "book_state": "VALID", "mid": mid, "quality": [], "oi_notional": oi_notional,
            "ofi_raw_10s": 1.0, "depth_bid_10bps": 100.0, "depth_ask_10bps": 50.0}


def test_headline_gauges_per_base_and_nothing_before_the_first_aggregate() -> None:
    aggregates = CrossVenueAggregates(interval_ms=1000, stale_s=5.0)
    registry = CollectorRegistry()
    registry.register(AggregateCollector(aggregates))
    for venue in ("binanceusdm", "bybit"):
        aggregates.track(venue, "BTC/USDT:USDT", "BTC")
        aggregates.track(venue, "ETH/USDT:USDT", "ETH")
    assert not [s for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples]
    aggregates.observe("binanceusdm", "BTC/USDT:USDT", _payload(100 * MS, 100.0, 600.0))
    aggregates.observe("bybit", "BTC/USDT:USDT", _payload(200 * MS, 101.0, 400.0))
    aggregates.observe("bybit", "BTC/USDT:USDT", _payload(1200 * MS, 101.0, 400.0))  # the aggregate at 1 s
    samples = {
        sample.name: (sample.labels, sample.value)
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    base = {"base": "BTC"}
    assert samples["flowgauge_agg_open_interest_notional"] == (base, 1000.0)
    assert samples["flowgauge_agg_ofi_notional_10s"] == (base, 201.0)
    assert samples["flowgauge_agg_depth_notional_10bps"] == (base, 300.0)
    assert samples["flowgauge_agg_venues_counted"] == (base, 2.0)
    assert samples["flowgauge_agg_last_timestamp_seconds"] == (base, 1.0)
    labels, dispersion = samples["flowgauge_agg_premium_dispersion_ratio"]
    assert labels == base and abs(dispersion - 1e-4 * 49.75124378109453) < 1e-12  # mids 100, 101: median 100.5
    # Every series carries the base label alone (ETH has published nothing yet: no series).
    assert len(samples) == 6
