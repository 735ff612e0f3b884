"""What one scrape costs: series per instrument (the README's figure for 500 instruments comes from here), no
`_created` samples, latency buckets from 10 us to 1 s, no series for a backend that is not configured, the book
state as a state set and bps exported as ratios (issue 12, item 6); the metric families' headline gauges
(`http.metrics_families`, issue 11 item 14): fixed series per instrument, closed label sets, only what is selected."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flowgauge.app import exported_families
from flowgauge.config import check_config_main, parse_settings
from flowgauge.metrics.families import ALL, FAMILIES, resolve
from flowgauge.telemetry.collector import BOOK_STATES, ClockOffsetCollector, SignalCollector
from flowgauge.telemetry.family_gauges import DEFAULT_EXPORTED_FAMILIES, GAUGES, FamilyCollector
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
# Every key of every family, numbers and the one label (the OI regime), arrays too: the gauges must stay bounded.
ALL_FAMILIES_PAYLOAD: Mapping[str, object] = {
    **FULL_PAYLOAD,
    **{key: 0.5 for keys in FAMILIES.values() for key in keys if key not in FULL_PAYLOAD},
    **{f"mlofi_{w}": [0.1] * 10 for w in ("1s", "10s", "60s")},
    **{f"oi_regime_{w}": "LONG_BUILDUP" for w in ("1m", "5m", "1h", "4h")},
    "source_granularity": "best_quote",
}
# The README states this (Observability, "Series budget"); a change to the exported families changes both.
SERIES_PER_INSTRUMENT = 29
# The family gauges on top (http.metrics_families): the default selection, and every family ("all").
FAMILY_SERIES_DEFAULT = 10
FAMILY_SERIES_ALL = 38
# 55 per venue + its clock offset + 22 for the process (the shard info included), as the daemon registers them.
SERIES_FIXED_ONE_VENUE_EMBEDDED = 78
README = Path(__file__).resolve().parents[2] / "README.md"


class _Books:
    def __init__(self, n: int, payload: Mapping[str, object] = FULL_PAYLOAD) -> None:
        self.symbols = [f"S{i}/USDT:USDT" for i in range(n)]
        self.payload = payload

    def latest_signals(self) -> Iterator[tuple[str, str, Mapping[str, object]]]:
        for symbol in self.symbols:
            yield "bybit", symbol, self.payload

    def book_states(self) -> Iterator[tuple[str, str, str]]:
        for symbol in self.symbols:
            yield "bybit", symbol, "VALID"

    def clock_offsets(self) -> Iterator[tuple[str, float]]:
        yield "bybit", 0.01


def _scrape(n_instruments: int, backends: tuple[str, ...] = ("embedded",), families: tuple[str, ...] = ()) -> str:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, version="test", backends=backends)
    telemetry.register_venue("bybit")
    books = _Books(n_instruments, ALL_FAMILIES_PAYLOAD)
    for symbol in books.symbols:
        telemetry.register_book("bybit", symbol)
    registry.register(SignalCollector(books))
    registry.register(FamilyCollector(books, families))
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


@pytest.mark.parametrize(
    ("selection", "extra"), [(list(DEFAULT_EXPORTED_FAMILIES), FAMILY_SERIES_DEFAULT), ([ALL], FAMILY_SERIES_ALL)]
)
def test_family_gauges_per_instrument_and_for_500_instruments(selection: list[str], extra: int) -> None:
    """The daemon's selection (publish.families all, so every named family is exported): fixed series per
    instrument whatever the payload holds, and the README's figures for 500 instruments."""
    settings = parse_settings({"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"]}}, "publish": {"families": [ALL]},
                               "http": {"metrics_families": selection}})  # fmt: skip
    families = exported_families(settings)
    one, eleven = len(_series(_scrape(1, families=families))), len(_series(_scrape(11, families=families)))
    assert (eleven - one) / 10 == SERIES_PER_INSTRUMENT + extra
    assert one - (SERIES_PER_INSTRUMENT + extra) == SERIES_FIXED_ONE_VENUE_EMBEDDED
    total = len(_series(_scrape(500, families=families)))
    assert total == 500 * (SERIES_PER_INSTRUMENT + extra) + SERIES_FIXED_ONE_VENUE_EMBEDDED
    budget = " ".join(README.read_text().split())
    assert f"{SERIES_PER_INSTRUMENT + extra} per instrument, {total:,} series for 500" in budget


def test_the_default_exports_the_default_payloads_headline_families() -> None:
    settings = parse_settings({"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"]}}})
    assert exported_families(settings) == DEFAULT_EXPORTED_FAMILIES
    assert settings.http.metrics_families == DEFAULT_EXPORTED_FAMILIES  # config keeps its own copy
    assert set(GAUGES) == set(FAMILIES) - {"core"}
    for family, gauges in GAUGES.items():  # every gauge reads a key its family publishes, each key once
        keys = [g.key for g in gauges if g.label is None or g.label[0] != "state"]
        assert set(keys) <= set(FAMILIES[family]) and len(keys) == len(set(keys)), family


def _family_names(families: tuple[str, ...]) -> set[str]:
    return {name for gauges in (GAUGES[f] for f in families) for name in (g.name for g in gauges)}


def test_only_the_selected_and_published_families_are_exported() -> None:
    every = _family_names(tuple(GAUGES))
    settings = parse_settings({"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"]}},
                               "publish": {"families": ["core", "fragility", "microprice"]},
                               "http": {"metrics_families": ["fragility", "trade_flow"]}})  # fmt: skip
    assert exported_families(settings) == ("fragility",)  # trade_flow is not published: nothing to export
    text = _scrape(2, families=exported_families(settings))
    names = {f.name for f in text_string_to_metric_families(text)}
    assert names & every == _family_names(("fragility",))  # no HELP line for the others either
    series = [(n, labels) for n, labels in _series(text) if n in every]
    assert len(series) == 2 * len(GAUGES["fragility"])
    impact = {labels["side"]: v for (n, labels), v in zip(_series(text), _values(text), strict=True)
              if n == "flowgauge_impact_cost_100k_ratio" and labels["symbol"] == "S0/USDT:USDT"}  # fmt: skip
    assert impact == {"buy": 0.5e-4, "sell": 0.5e-4}  # bps exported as ratios
    none = parse_settings({"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"]}}, "http": {"metrics_families": []}})
    assert not {f.name for f in text_string_to_metric_families(_scrape(1, families=exported_families(none)))} & every


def test_family_gauges_label_sets_are_closed_and_null_values_absent() -> None:
    text = _scrape(1, families=resolve([ALL]))
    extra_labels: dict[str, set[str]] = {}
    for name, labels in _series(text):
        if name in _family_names(tuple(GAUGES)):
            rest = {k: v for k, v in labels.items() if k not in ("venue", "symbol")}
            assert len(rest) <= 1, (name, labels)
            for k, v in rest.items():
                extra_labels.setdefault(k, set()).add(v)
    assert extra_labels == {"window": {"1s", "10s", "60s", "ew10s", "5m"}, "levels": {"10"}, "band": {"10bps"},
                            "side": {"buy", "sell"},
                            "state": {"NEUTRAL", "LONG_BUILDUP", "SHORT_BUILDUP", "SHORT_COVERING", "LONG_UNWINDING",
                                      "LONG_LIQUIDATION"}}  # fmt: skip
    regime = {labels["state"]: v for (n, labels), v in zip(_series(text), _values(text), strict=True)
              if n == "flowgauge_oi_regime"}  # fmt: skip
    assert regime["LONG_BUILDUP"] == 1.0 and sum(regime.values()) == 1.0
    # null or missing: no series (a regime still undefined: no state series at all)
    books = _Books(1, {**ALL_FAMILIES_PAYLOAD, "risk_scale": None, "oi_regime_5m": None, "micro_price": True})
    registry = CollectorRegistry()
    registry.register(FamilyCollector(books, resolve([ALL])))
    names = {n for n, _ in _series(generate_latest(registry).decode())}
    assert {"flowgauge_risk_scale", "flowgauge_oi_regime", "flowgauge_micro_price"}.isdisjoint(names)
    assert "flowgauge_hedge_urgency" in names


def test_an_unknown_metrics_family_is_one_config_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("venues:\n  bybit:\n    symbols: [BTC/USDT:USDT]\nhttp:\n  metrics_families: [risk, rsik]\n")
    assert check_config_main(str(path), False, {}) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("http.metrics_families: unknown metric family 'rsik'; known: core, ofi_l1, ")


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
