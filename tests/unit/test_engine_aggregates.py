"""Engine + cross-venue aggregates: BTC perpetuals of three venues interleaved in exchange time, through the real
engine under each core, publish aggregates on flowgauge.v1.agg.BTC that the schema accepts; a gap excludes a venue
until it resyncs; the same events give the same aggregates (ts_publish aside)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import msgspec
import orjson
import pytest
from tests.conftest import linear_instrument

from flowgauge import core
from flowgauge.engine import Engine
from flowgauge.metrics.aggregate import CrossVenueAggregates
from flowgauge.sdk.payloads import AggregatePayload, decode
from flowgauge.types import BookDelta, BookSnapshot, FundingRate, OpenInterest

S = 1_000_000_000
MS = 1_000_000
AGG_TOPIC = "flowgauge.v1.agg.BTC"
AGG_SCHEMA = json.loads((resources.files("flowgauge") / "schema" / "agg.v1.json").read_text())
VENUES = ("binanceusdm", "bybit", "okx")
MIDS = {"binanceusdm": 100.05, "bybit": 100.15, "okx": 99.95}  # each book's bid + 0.05


def _events() -> list[object]:
    """Snapshots at 0.1 s, a mark price of 100 and OI 10, 20, 30 (one per venue), then one delta per venue every
    200 ms for 3 s; Bybit's seq jumps at 1.9 s (a gap) and it is never resynced."""
    events: list[object] = []
    for i, venue in enumerate(VENUES):
        bid = MIDS[venue] - 0.05
        events.append(BookSnapshot(venue, "BTC/USDT:USDT", ((bid, 2.0),), ((bid + 0.1, 3.0),), 1, 100 * MS + i, 0))
        events.append(FundingRate(venue, "BTC/USDT:USDT", None, None, None, 100.0, None, 140 * MS + i, 0))
        events.append(OpenInterest(venue, "BTC/USDT:USDT", 10.0 * (i + 1), 150 * MS + i, 0))
    seq = dict.fromkeys(VENUES, 1)
    for step in range(1, 16):
        for i, venue in enumerate(VENUES):
            t = 100 * MS + step * 200 * MS + i * MS
            seq[venue] += 2 if venue == "bybit" and step == 9 else 1  # Bybit's 9th delta skips one: a gap
            bid = MIDS[venue] - 0.05
            events.append(BookDelta(venue, "BTC/USDT:USDT", ((bid, 2.0 + step),), (), seq[venue], None, t, t))
    return events


def _run(core_name: str) -> list[dict[str, Any]]:
    out: list[tuple[str, dict[str, Any]]] = []
    engine = Engine(
        lambda topic, body: out.append((topic, orjson.loads(body))),
        clock=lambda: 7,
        core_name=core_name,
        aggregates=CrossVenueAggregates(interval_ms=1000, stale_s=5.0),
    )
    for venue in VENUES:
        engine.add_instrument(msgspec.structs.replace(linear_instrument(), venue=venue))
    for event in _events():
        engine.handle(event)
    return [payload for topic, payload in out if topic == AGG_TOPIC]


@pytest.mark.parametrize("core_name", core.CORES)
def test_aggregates_for_btc_across_three_venues(core_name: str) -> None:
    aggregates = _run(core_name)
    # Book payloads run from 0.1 s to 3.1 s: aggregates at 1, 2 and 3 s.
    assert [a["ts_exchange"] for a in aggregates] == [1 * S, 2 * S, 3 * S]
    assert [a["seq"] for a in aggregates] == [1, 2, 3]
    for aggregate in aggregates:
        jsonschema.validate(aggregate, AGG_SCHEMA)
        assert aggregate["base"] == "BTC" and aggregate["ts_publish"] == 7
        typed = decode(AGG_TOPIC, orjson.dumps(aggregate))  # the SDK picks its Struct by the topic
        assert isinstance(typed, AggregatePayload) and typed.venues == aggregate["venues"]
    first, second, third = aggregates
    assert first["venues"] == list(VENUES) and first["excluded"] == []
    # OI notional = OI x mark price: (10 + 20 + 30) x 100, shared 1/6, 2/6, 3/6.
    assert first["oi_notional"] == pytest.approx(6000.0)
    assert first["oi_share"] == pytest.approx({"binanceusdm": 1 / 6, "bybit": 2 / 6, "okx": 3 / 6})
    assert first["mid_median"] == pytest.approx(100.05)
    assert first["premium_bps"]["bybit:BTC/USDT:USDT"] == pytest.approx(1e4 * (100.15 / 100.05 - 1))
    assert first["premium_range_bps"] == pytest.approx(1e4 * (100.15 - 99.95) / 100.05)
    # Every bid grew by 1 per delta at an unchanged price: OFI +1 per event in base units, times the mid.
    assert first["ofi_notional_1s"] == pytest.approx(sum(4 * mid for mid in MIDS.values()))
    # Bybit's gap at 1.9 s (its 9th delta) makes its book INVALID: excluded from then on, and listed.
    assert second["venues"] == ["binanceusdm", "okx"]
    assert second["excluded"] == [
        {"venue": "bybit", "symbol": "BTC/USDT:USDT", "reason": "INVALID", "ts_exchange": 1701 * MS}
    ]
    assert third["excluded"][0]["reason"] == "INVALID"


def test_aggregates_are_the_same_under_both_cores_and_on_a_second_run() -> None:
    assert _run(core.PYTHON) == _run(core.PYTHON) == _run(core.COMPILED)


def test_no_aggregates_without_the_aggregator() -> None:
    out: list[str] = []
    engine = Engine(lambda topic, body: out.append(topic))
    for venue in VENUES:
        engine.add_instrument(msgspec.structs.replace(linear_instrument(), venue=venue))
    for event in _events():
        engine.handle(event)
    assert out and AGG_TOPIC not in out
