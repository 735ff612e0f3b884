"""What one scrape costs: series per instrument (the README's figure for 500 instruments comes from here), no
`_created` samples, latency buckets from 10 us to 1 s, no series for a backend that is not configured, the book
state as a state set and bps exported as ratios (issue 12, item 6)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flowgauge.telemetry.collector import BOOK_STATES, ClockOffsetCollector, SignalCollector
from flowgauge.telemetry.instruments import LATENCY_BUCKETS, Telemetry

# Every key the collector exports, so each instrument shows its full cost.
FULL_PAYLOAD: Mapping[str, object] = {
    **{f"depth_imb_{n}": 0.1 for n in (1, 5, 10, 20)},
    **{f"ofi_raw_{w}": 1.0 for w in ("1s", "10s", "60s")},
    "ofi_ew_10s": 1.0,
    **{f"tfi_{w}": 0.2 for w in ("10s", "60s")},
    "oi": 1.0, "oi_notional": 2.0, "funding_rate_8h": 1e-4, "premium_bps_live": -1.25, "spread_bps": 0.5,
    "mid": 100.0, "ts_exchange": 1_700_000_000_000_000_000,
}
# The README states this (Observability, "Series budget"); a change to the exported families changes both.
SERIES_PER_INSTRUMENT = 29
# 55 per venue + its clock offset + 22 for the process (the shard info included), as the daemon registers them.
SERIES_FIXED_ONE_VENUE_EMBEDDED = 78
README = Path(__file__).resolve().parents[2] / "README.md"


class _Books:
    def __init__(self, n: int) -> None:
        self.symbols = [f"S{i}/USDT:USDT" for i in range(n)]

    def latest_signals(self) -> Iterator[tuple[str, str, Mapping[str, object]]]:
        for symbol in self.symbols:
            yield "bybit", symbol, FULL_PAYLOAD

    def book_states(self) -> Iterator[tuple[str, str, str]]:
        for symbol in self.symbols:
            yield "bybit", symbol, "VALID"

    def clock_offsets(self) -> Iterator[tuple[str, float]]:
        yield "bybit", 0.01


def _scrape(n_instruments: int, backends: tuple[str, ...] = ("embedded",)) -> str:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, version="test", backends=backends)
    telemetry.register_venue("bybit")
    books = _Books(n_instruments)
    for symbol in books.symbols:
        telemetry.register_book("bybit", symbol)
    registry.register(SignalCollector(books))
    # What the daemon adds to every registry (app.py): the venue clock offsets and this process's shard.
    registry.register(ClockOffsetCollector(books))
    telemetry.set_shard(0, 1)
    return generate_latest(registry).decode()


def _series(text: str) -> list[tuple[str, dict[str, str]]]:
    return [(s.name, dict(s.labels)) for f in text_string_to_metric_families(text) for s in f.samples]


def test_series_per_instrument_and_for_500_instruments() -> None:
    one, eleven = len(_series(_scrape(1))), len(_series(_scrape(11)))
    per_instrument = (eleven - one) / 10
    assert per_instrument == SERIES_PER_INSTRUMENT
    assert one - per_instrument == SERIES_FIXED_ONE_VENUE_EMBEDDED
    # The README's figure: 500 instruments on one venue, embedded bus only.
    total = len(_series(_scrape(500)))
    assert total == 500 * SERIES_PER_INSTRUMENT + SERIES_FIXED_ONE_VENUE_EMBEDDED == 14_578
    budget = " ".join(README.read_text().split())
    assert f"{SERIES_PER_INSTRUMENT} series per instrument" in budget and f"{total:,} series" in budget


def test_no_created_samples() -> None:
    text = _scrape(2)
    assert "_created" not in text


def test_latency_buckets_span_10us_to_1s() -> None:
    assert LATENCY_BUCKETS[0] == 1e-5 and LATENCY_BUCKETS[-1] == 1.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)
    bounds = {
        labels["le"] for name, labels in _series(_scrape(1))
        if name == "flowgauge_event_latency_seconds_bucket" and labels["stage"] == "recv_to_publish"
    }
    assert bounds == {"1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                      "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf"}


def test_no_series_for_a_backend_that_is_not_configured() -> None:
    names = {(name, labels.get("backend")) for name, labels in _series(_scrape(1, backends=("nats",)))}
    assert {backend for _, backend in names if backend} == {"nats"}
    assert not [name for name, _ in names if name.startswith("flowgauge_fanout_")]
    with_embedded = {name for name, _ in _series(_scrape(1, backends=("embedded",)))}
    assert "flowgauge_fanout_clients" in with_embedded
    assert not [n for n in with_embedded if n.startswith("flowgauge_publish") and "nats" in n]


def test_book_state_is_a_state_set_and_bps_are_ratios() -> None:
    series = _series(_scrape(1))
    states = {labels["state"]: value for (name, labels), value in zip(series, _values(_scrape(1)), strict=True)
              if name == "flowgauge_book_state"}
    assert states == {state: (1.0 if state == "VALID" else 0.0) for state in BOOK_STATES}
    names = {name for name, _ in series}
    assert not [n for n in names if n.endswith("_bps")]
    values = dict(zip([n for n, _ in series], _values(_scrape(1)), strict=True))
    assert values["flowgauge_book_spread_ratio"] == 0.5e-4
    assert values["flowgauge_premium_ratio"] == -1.25e-4


def _values(text: str) -> list[float]:
    return [s.value for f in text_string_to_metric_families(text) for s in f.samples]


def test_shard_info_names_this_process_shard() -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, version="test")
    telemetry.set_shard(0, 1)
    telemetry.set_shard(2, 3)  # replaces, never two
    infos = [labels for name, labels in _series(generate_latest(registry).decode()) if name == "flowgauge_shard_info"]
    assert infos == [{"shard": "2", "shard_count": "3"}]
