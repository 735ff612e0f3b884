"""Inputs the fuzzer found that published corrupted books, kept as explicit regression tests (both cores).

- Bybit's generic level loop refused NaN but let "inf" through: a delta with a bid price or a size of "inf"
  (the typed fast path rejected it and sent it there) published `depth_bid_10bps: inf` and `depth_imb_20: NaN`
  on a VALID book.
- A finite but absurd size (1.7976931348623157e308 in a Hyperliquid l2Book) passed every check and overflowed the
  depth sums to infinity; level numbers are now bounded on every path ([MIN_PRICE, MAX_LEVEL_VALUE)).
- A Bybit ticker with `"markPrice": "NaN"` published `mark_price` and `oi_notional` NaN, and one with
  `"markPrice": "1e308"` (finite) published `oi_notional: inf` (long profile); trades of absurd size reached the
  flow windows unchecked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from tests.fuzz.venues import Harness, venue_case

from flowgauge import core
from flowgauge.connectors import levels


@pytest.fixture(params=core.CORES)
def core_name(request: pytest.FixtureRequest) -> Iterator[str]:
    previous = core.active_core()
    core.select(request.param)
    try:
        yield request.param
    finally:
        core.select(previous)


def primed(venue: str, core_name: str) -> Harness:
    case = venue_case(venue)
    harness = Harness(case, core_name)
    for op in case.prime:
        harness.op(op)
    assert harness.valid_books() > 0
    return harness


@pytest.mark.parametrize(("side", "index", "value"), [("b", 1, "inf"), ("a", 1, "1e999"), ("b", 0, "1e300")])
def test_bybit_delta_with_a_huge_or_infinite_level_is_a_bad_frame(
    core_name: str, side: str, index: int, value: str
) -> None:
    harness = primed("bybit", core_name)
    delta = json.loads(harness.case.continuation[0].data)
    delta["data"][side][0][index] = value
    payloads = harness.checker.valid_book_payloads
    harness.frame(json.dumps(delta))  # the checker raises on a published non-finite value or bad level
    assert harness.checker.valid_book_payloads == payloads
    assert harness.engine.bad_frames == 1


def test_hyperliquid_book_with_an_absurd_size_is_a_bad_frame(core_name: str) -> None:
    harness = primed("hyperliquid", core_name)
    book = json.loads(next(op.data for op in harness.case.continuation if '"l2Book"' in op.data))
    book["data"]["levels"][0][6]["sz"] = 1.7976931348623157e308
    harness.frame(json.dumps(book))
    book["data"]["levels"][0][6]["sz"] = "1.7976931348623157e308"
    harness.frame(json.dumps(book))
    assert harness.engine.bad_frames == 2


def test_bybit_ticker_with_a_nan_mark_price_is_a_bad_frame(core_name: str) -> None:
    harness = primed("bybit", core_name)
    ticker = json.loads(next(s for s in harness.case.frame_seeds if '"tickers.' in s and '"markPrice"' in s))
    ticker["data"]["markPrice"] = "NaN"
    symbol = ticker["topic"].rpartition(".")[2]
    harness.frame(json.dumps(ticker))
    assert harness.engine.bad_frames == 1
    for state in harness.engine.states():
        if state.instrument.venue_id == symbol and state.latest is not None:
            assert state.latest["mark_price"] == state.latest["mark_price"]


@pytest.mark.parametrize(
    ("price", "size", "ok"),
    [
        (1.0, 0.0, True),
        (levels.MIN_PRICE, levels.MAX_LEVEL_VALUE / 2, True),
        (levels.MIN_PRICE / 2, 1.0, False),
        (1.0, levels.MAX_LEVEL_VALUE, False),
        (levels.MAX_LEVEL_VALUE, 1.0, False),
        (1.0, float("nan"), False),
        (float("inf"), 1.0, False),
        (1.0, -0.5, False),
    ],
)
def test_both_cores_bound_level_values_alike(price: float, size: float, ok: bool) -> None:
    compiled = core.compiled_module()
    row = ((2.0, 1.0), (price, size))
    assert levels.valid_level(price, size) is ok
    assert levels.reference_valid_levels(row) is ok
    assert bool(compiled.valid_levels(row)) is ok
    assert (compiled.string_levels([["2", "1"], [repr(price), repr(size)]]) is not None) is ok
    assert (compiled.dict_levels([{"px": repr(price), "sz": repr(size)}], 1, 1.0) is not None) is ok
    assert (compiled.action_levels([["new", price, size]], False) is not None) is ok
    assert (compiled.MIN_PRICE, compiled.MAX_LEVEL_VALUE) == (levels.MIN_PRICE, levels.MAX_LEVEL_VALUE)


def test_bybit_ticker_with_an_absurd_mark_price_is_a_bad_frame(core_name: str) -> None:
    harness = primed("bybit", core_name)
    ticker = json.loads(next(s for s in harness.case.frame_seeds if '"tickers.' in s and '"markPrice"' in s))
    ticker["data"]["markPrice"] = "1e308"
    harness.frame(json.dumps(ticker))  # the checker raises on a published oi_notional of inf
    assert harness.engine.bad_frames == 1


def test_a_trade_of_absurd_size_never_reaches_the_windows(core_name: str) -> None:
    harness = primed("hyperliquid", core_name)
    trades = json.loads(next(op.data for op in harness.case.continuation if '"trades"' in op.data))
    trades["data"] = trades["data"][:1]
    trades["data"][0]["sz"] = "1e300"
    harness.frame(json.dumps(trades))
    assert harness.engine.bad_frames == 1
    for op in harness.case.continuation:
        harness.op(op)  # later book payloads carry tfi: the checker raises on NaN or inf


def test_an_absurd_exchange_time_decays_to_nothing_in_both_cores(core_name: str) -> None:
    """Long profile: a Bybit ticker stamped "ts": "9" * 400 raised OverflowError out of the reference core's
    decayed sums (int too large to convert to float); the compiled core clamps such times at +-2^62 ns, and
    the reference now does the same."""
    harness = primed("bybit", core_name)
    ticker = json.loads(next(s for s in harness.case.frame_seeds if '"tickers.' in s and '"markPrice"' in s))
    ticker["ts"] = "9" * 400
    harness.frame(json.dumps(ticker))
    for op in harness.case.continuation:
        harness.op(op)
