"""Best quotes through the engine (issue 11 item 1; metrics.md 10.2 T14 for the L1 fields), under both cores:
quotes update the L1 fields only and publish nothing; a gap in the book stops L1 flow until the resync, across
which no e_n is computed, and its payloads carry GAP; without quotes the L1 fields are derived from the book;
out-of-range quotes are bad frames; throttled payloads lose no L1 flow."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from tests.conftest import linear_instrument

from flowgauge import core
from flowgauge.engine import Engine
from flowgauge.types import BestQuote, BookDelta, BookSnapshot, OpenInterest

SYM = "BTC/USDT:USDT"
TOPIC = "flowgauge.v1.bybit.BTC-USDT-USDT"
S = 1_000_000_000
MS = 1_000_000


def snapshot(seq: int, t: int) -> BookSnapshot:
    return BookSnapshot("bybit", SYM, ((100.0, 5.0),), ((100.1, 3.0),), seq, t, t)


def delta(seq: int, t: int, bids: Any = (), asks: Any = ()) -> BookDelta:
    return BookDelta("bybit", SYM, tuple(bids), tuple(asks), seq, None, t, t)


def quote(bid: float, bid_sz: float, ask: float, ask_sz: float, t: int, seq: int | None = None) -> BestQuote:
    return BestQuote("bybit", SYM, bid, bid_sz, ask, ask_sz, seq, t, t)


@pytest.fixture(params=core.CORES)
def engine_out(request: pytest.FixtureRequest) -> tuple[Engine, list[dict[str, Any]]]:
    if request.param == core.COMPILED and core.fallback_reason() is not None:
        pytest.fail(f"the compiled core must be built here: {core.fallback_reason()}")
    out: list[dict[str, Any]] = []

    def sink(topic: str, body: bytes) -> None:
        if topic == TOPIC:
            out.append(orjson.loads(body))

    engine = Engine(sink, clock=lambda: 0, core_name=request.param)
    engine.add_instrument(linear_instrument())
    return engine, out


def test_quotes_feed_l1_only_and_publish_nothing(engine_out: tuple[Engine, list[dict[str, Any]]]) -> None:
    engine, out = engine_out
    engine.handle(quote(100.0, 5.0, 100.1, 3.0, 1 * S))  # before the book is VALID: counts nothing
    engine.handle(snapshot(10, 1 * S + 1 * MS))
    engine.handle(quote(100.0, 5.0, 100.1, 3.0, 1 * S + 2 * MS))  # first L1 state
    engine.handle(quote(100.0, 7.0, 100.1, 3.0, 1 * S + 3 * MS))  # +2 (metrics.md 1.5 S1)
    engine.handle(quote(100.0, 7.0, 100.1, 1.0, 1 * S + 4 * MS))  # +2 (S2)
    assert len(out) == 1  # the snapshot's payload only: quotes publish nothing
    first = out[0]
    assert first["ofi_l1"] is None and first["source_granularity"] == "best_quote"
    engine.handle(delta(11, 1 * S + 5 * MS, bids=[(100.0, 6.0)]))
    book = out[-1]
    assert book["ofi_l1"] == 4.0 and book["ofi_l1_1s"] == 4.0 and book["ofi_l1_60s"] == 4.0
    assert book["ofi"] == 1.0  # the depth stream's own e_n is untouched
    assert book["bid_sz"] == 6.0  # and so is the book


def test_no_l1_flow_across_a_gap_and_the_gap_is_flagged(engine_out: tuple[Engine, list[dict[str, Any]]]) -> None:
    engine, out = engine_out
    engine.handle(snapshot(10, 1 * S))
    engine.handle(quote(100.0, 5.0, 100.1, 3.0, 1 * S + 1 * MS))
    engine.handle(quote(100.0, 6.0, 100.1, 3.0, 1 * S + 2 * MS))  # +1, pending
    assert engine.handle(delta(13, 1 * S + 3 * MS, bids=[(100.0, 1.0)])) == SYM  # gap: INVALID
    engine.handle(quote(100.0, 50.0, 100.1, 3.0, 1 * S + 4 * MS))  # while INVALID: nothing
    engine.handle(OpenInterest("bybit", SYM, 1.0, 1 * S + 5 * MS, 1 * S + 5 * MS))
    invalid = out[-1]
    assert invalid["trigger"] == "open_interest" and invalid["ofi_l1"] is None and "GAP" in invalid["quality"]
    assert invalid["ofi_l1_1s"] == 1.0  # flow before the gap stays in the windows, flagged
    engine.handle(snapshot(20, 2 * S))  # resync
    engine.handle(quote(100.0, 9.0, 100.1, 3.0, 2 * S + 1 * MS))  # first L1 state after it: no e_n
    engine.handle(quote(100.0, 9.0, 100.1, 2.0, 2 * S + 2 * MS))  # +1
    engine.handle(delta(21, 2 * S + 3 * MS, asks=[(100.1, 2.5)]))
    after = out[-1]
    assert after["book_state"] == "VALID"
    assert after["ofi_l1"] == 1.0  # the +1 before the gap went with the invalid period; none across it
    assert after["ofi_l1_10s"] == 2.0 and "GAP" in after["quality"]
    assert after["coverage"]["ofi_l1_1s"] == "PARTIAL"


def test_without_quotes_l1_is_derived_from_the_book(engine_out: tuple[Engine, list[dict[str, Any]]]) -> None:
    engine, out = engine_out
    engine.handle(snapshot(10, 1 * S))
    engine.handle(delta(11, 1 * S + 1 * MS, bids=[(100.0, 7.0)]))
    engine.handle(delta(12, 1 * S + 2 * MS, asks=[(100.1, 0.0), (100.2, 4.0)]))
    assert [p["source_granularity"] for p in out] == ["derived"] * 3
    assert [p["ofi_l1"] for p in out] == [None, 2.0, 3.0]
    assert [p["ofi_l1"] for p in out[1:]] == [p["ofi"] for p in out[1:]]


def test_out_of_range_quotes_are_bad_frames(engine_out: tuple[Engine, list[dict[str, Any]]]) -> None:
    engine, out = engine_out
    engine.handle(snapshot(10, 1 * S))
    engine.handle(quote(100.0, 5.0, 100.1, 3.0, 1 * S + 1 * MS))
    engine.handle(quote(-1.0, 5.0, 100.1, 3.0, 1 * S + 2 * MS))
    engine.handle(BestQuote("bybit", SYM, 100.0, None, 100.1, 3.0, None, 1 * S + 3 * MS, 1 * S))
    assert engine.bad_frames == 2
    engine.handle(BestQuote("bybit", SYM, None, None, 100.1, 3.0, None, 1 * S + 4 * MS, 1 * S))  # empty bid side
    engine.handle(delta(11, 1 * S + 5 * MS, asks=[(100.1, 2.0)]))
    assert out[-1]["ofi_l1"] == -5.0  # the bid queue of 5 left (metrics.md 1.4: empty side = retreat)


def test_throttled_payloads_lose_no_l1_flow() -> None:
    out: list[dict[str, Any]] = []
    engine = Engine(lambda t, b: out.append(orjson.loads(b)) if t == TOPIC else None, min_interval_ms=1000)
    engine.add_instrument(linear_instrument())
    engine.handle(snapshot(10, 1 * S))
    engine.handle(quote(100.0, 5.0, 100.1, 3.0, 1 * S + 1))
    for i in range(5):
        engine.handle(quote(100.0, 6.0 + i, 100.1, 3.0, 1 * S + 10 + i))
        engine.handle(delta(11 + i, 1 * S + 20 + i, bids=[(99.0, float(i + 1))]))
    assert len(out) == 1  # every book payload after the snapshot's was throttled
    engine.handle(OpenInterest("bybit", SYM, 1.0, 2 * S, 2 * S))
    assert out[-1]["ofi_l1"] == 5.0  # 5 -> 10, all of it in the next published payload
