"""The compiled core's C-array book against the reference `L2Book`: same levels, same bound, same answers."""

from __future__ import annotations

import random
from typing import Any

import pytest
from tests.conftest import linear_instrument

from flowgauge import core
from flowgauge.book.l2 import L2Book
from flowgauge.core import _core
from flowgauge.metrics.accumulator import InstrumentMetrics
from flowgauge.metrics.compiled import CompiledInstrumentMetrics
from flowgauge.types import InvalidReason


@pytest.fixture(params=core.CORES)
def make_book(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return lambda max_levels=5000: core.new_book(request.param, max_levels)


def test_levels_are_kept_best_first(make_book) -> None:  # type: ignore[no-untyped-def]
    book = make_book()
    book.load([(100.0, 1.0), (99.0, 2.0), (98.5, 0.0)], [(101.0, 3.0), (102.0, 1.0)], 7, 1)
    book.apply([(99.5, 4.0), (99.0, 0.0)], [(100.5, 1.5), (102.0, 2.5)], 8, 2)
    assert book.bids.levels() == [(100.0, 1.0), (99.5, 4.0)]
    assert book.asks.levels() == [(100.5, 1.5), (101.0, 3.0), (102.0, 2.5)]
    assert book.bids.best() == (100.0, 1.0) and book.asks.worst_price() == 102.0
    assert book.asks.size_at(101.0) == 3.0 and book.asks.size_at(101.5) == 0.0
    assert book.seq == 8 and book.ts_exchange == 2 and not book.is_crossed()
    book.apply([(100.5, 1.0)], [], 9, 3)
    assert book.is_crossed()
    book.clear()
    assert len(book.bids) == len(book.asks) == 0 and book.bids.best() is None and book.seq is None


def test_the_bound_drops_the_worst_level_and_counts_it(make_book) -> None:  # type: ignore[no-untyped-def]
    book = make_book(3)
    book.load([(100.0, 1.0), (99.0, 1.0), (98.0, 1.0), (97.0, 1.0)], [(101.0, 1.0)], 1, 1)
    assert [p for p, _ in book.bids.levels()] == [100.0, 99.0, 98.0]
    assert book.dropped_levels == 1
    book.apply([(96.0, 1.0)], [], 2, 2)  # worse than every kept level: dropped
    book.apply([(99.5, 2.0)], [], 3, 3)  # better: the worst kept level (98) goes
    assert [p for p, _ in book.bids.levels()] == [100.0, 99.5, 99.0]
    assert book.dropped_levels == 3
    book.apply([], [(102.0, 1.0), (103.0, 1.0), (100.5, 1.0)], 4, 4)
    assert [p for p, _ in book.asks.levels()] == [100.5, 101.0, 102.0]
    assert book.dropped_levels == 4


def test_random_operations_give_identical_books_and_band_sums() -> None:
    rng = random.Random(8)
    reference, compiled = L2Book(max_levels=40), _core.CBook(40)
    for step in range(4000):
        if step % 500 == 0:
            bids = [(round(rng.uniform(90, 100), 1), rng.choice((0.0, rng.uniform(0, 5)))) for _ in range(60)]
            asks = [(round(rng.uniform(100.1, 110), 1), rng.uniform(0, 5)) for _ in range(60)]
            reference.load(bids, asks, step, step)
            compiled.load(bids, asks, step, step)
        else:
            side = rng.choice(("bids", "asks"))
            price = round(rng.uniform(90, 100), 1) if side == "bids" else round(rng.uniform(100.1, 110), 1)
            size = rng.choice((0.0, rng.uniform(0.001, 5)))
            getattr(reference, side).set(price, size)
            getattr(compiled, side).set(price, size)
        assert compiled.bids.levels() == reference.bids.levels()
        assert compiled.asks.levels() == reference.asks.levels()
        limit = rng.uniform(90, 110)
        assert compiled.bids.notional_within(limit) == float(reference.bids.notional_within(limit))
        assert compiled.asks.notional_within(limit) == float(reference.asks.notional_within(limit))
        assert compiled.bids.top_sizes(20) == reference.bids.top_sizes(20)
    assert reference.dropped_levels > 0


def test_book_fields_and_ofi_match_the_reference_on_random_books() -> None:
    rng = random.Random(3)
    instrument = linear_instrument()
    ref_metrics, c_metrics = InstrumentMetrics(instrument), CompiledInstrumentMetrics(instrument)
    reference, compiled = L2Book(), _core.CBook(5000)
    for step in range(3000):
        if step % 700 == 0:  # now and then one side empty, or both
            bids = [] if step % 1400 == 0 else [(round(rng.uniform(99, 100), 2), rng.uniform(0, 3)) for _ in range(30)]
            asks = [] if step == 2100 else [(round(rng.uniform(100.01, 101), 2), rng.uniform(0, 3)) for _ in range(30)]
            reference.load(bids, asks, step, step)
            compiled.load(bids, asks, step, step)
        else:
            side = rng.choice(("bids", "asks"))
            price = round(rng.uniform(99, 100), 2) if side == "bids" else round(rng.uniform(100.01, 101), 2)
            size = rng.choice((0.0, rng.uniform(0.001, 3)))
            getattr(reference, side).set(price, size)
            getattr(compiled, side).set(price, size)
        ts = 1_000_000_000 + step * 1_000_000
        ref_metrics.on_book(reference, ts)
        c_metrics.on_book(compiled, ts)
        if step % 900 == 450:
            ref_metrics.on_book_invalid(ts, InvalidReason.GAP)
            c_metrics.on_book_invalid(ts, InvalidReason.GAP)
        assert c_metrics.fields(compiled, ts, "book") == ref_metrics.fields(reference, ts, "book")


@pytest.mark.parametrize(
    "levels",
    [
        (),
        ((1.0, 2.0), (3.0, 0.0)),
        ((0.0, 1.0),),
        ((1.0, -1.0),),
        ((float("nan"), 1.0),),
        ((1.0, float("inf")),),
        ((1e308, 1.0), (1e308, 1.0)),  # each finite, the sum overflows: the reference rejects it too
        # Not the typed decode's shape (tuples of two floats) from some item on: the generic loop decides.
        ((2.0, 1.0), (1, 2)),
        ((2.0, 1.0), [float("nan"), 1.0]),
        ((2.0, 1.0), (0, 1.0)),
        [(2.0, 1.0), (-1.0, 1.0)],
        [[2.0, 1.0]],
    ],
)
def test_level_validation_gives_the_reference_verdicts(levels: tuple[tuple[float, float], ...]) -> None:
    from flowgauge.connectors.levels import reference_valid_levels, reference_valid_sides

    assert _core.valid_levels(levels) == reference_valid_levels(levels)
    good = ((3.0, 1.0), (2.0, 0.0))
    assert _core.valid_sides(levels, good) == reference_valid_sides(levels, good)
    assert _core.valid_sides(good, levels) == reference_valid_sides(good, levels)


def test_c_windows_give_the_reference_bits_on_random_streams() -> None:
    from flowgauge.metrics import windows

    rng = random.Random(1)
    for _ in range(12):
        window = rng.choice([10**9, 10**10, 6 * 10**10])
        max_items = rng.choice([5, 1000, 1_000_000])
        horizon = rng.choice([0, 10**9, 5 * 10**9])
        ref = windows.SlidingSum(window, max_items=max_items, horizon_ns=horizon)
        ours = _core.SlidingSum(window, max_items, horizon)
        ref_ew = windows.DecayedSum.for_window(10.0, horizon)
        ours_ew = _core.DecayedSum.for_window(10.0, horizon)
        t = 10**18
        for _ in range(3000):
            t += rng.choice([0, 1, 10**6, 10**8, 3 * 10**8, 2 * 10**9])
            # mostly in order; some late within the horizon, some beyond it
            at = t - rng.choice([0] * 8 + [10**7, 10**9, 3 * 10**9, 2 * 10**10])
            x = rng.choice([rng.uniform(-100, 100), rng.choice([1e-9, 1e12, -3.0, 0.1, 0.2, 0.3])])
            ref.add(at, x)
            ours.add(at, x)
            ref_ew.add(at, x)
            ours_ew.add(at, x)
            for _ in range(rng.choice([1, 1, 2])):  # queries at, before and after the newest time
                query = t + rng.choice([0, 0, 5 * 10**8, -(10**9), -(4 * 10**9), -(10**10)])
                assert ours.value(query) == ref.value(query)
                assert ours_ew.value(query) == ref_ew.value(query)
            assert (len(ours), ours.late_dropped, ours.late_queries, ours.overflow_dropped) == (
                len(ref),
                ref.late_dropped,
                ref.late_queries,
                ref.overflow_dropped,
            )
            assert (len(ours_ew), ours_ew.late_folded, ours_ew.late_queries) == (
                len(ref_ew),
                ref_ew.late_folded,
                ref_ew.late_queries,
            )
        # A time beyond 64 bits (a venue's garbage timestamp) gives the reference's answers too.
        assert ours.value(10**23) == ref.value(10**23)
        assert ours_ew.value(10**23) == ref_ew.value(10**23)
        assert ours.value(t) == ref.value(t)
        assert ours_ew.value(t) == ref_ew.value(t)


def test_c_trade_flow_gives_the_reference_bits_on_random_trades() -> None:
    from flowgauge.metrics import trades, windows

    rng = random.Random(5)
    ref_flow, ours_flow = windows.SlidingFlow(10**10, max_items=50), _core.SlidingFlow(10**10, 50)
    ref_tfi, ours_tfi = trades.TradeFlowImbalance(10**10), _core.TradeFlowImbalance(10**10)
    t = 10**18
    for _ in range(4000):
        t += rng.choice([0, 10**6, 10**8, 2 * 10**9])
        at = t - rng.choice([0] * 6 + [10**8, 3 * 10**9, 2 * 10**10])
        side, size = rng.choice((1, -1)), rng.choice([rng.uniform(0, 10), 0.1, 0.2, 1e-8])
        ref_flow.add(at, side * size, size)
        ours_flow.add(at, side * size, size)
        ref_tfi.add(at, side, size)
        ours_tfi.add(at, side, size)
        query = t + rng.choice([0, 0, -(10**9), -(6 * 10**9), 10**9])
        assert ours_flow.evaluate(query) == ref_flow.evaluate(query)
        assert ours_tfi.value(query) == ref_tfi.value(query)
    assert (len(ours_flow), ours_flow.late_dropped, ours_flow.overflow_dropped, ours_flow.late_queries) == (
        len(ref_flow),
        ref_flow.late_dropped,
        ref_flow.overflow_dropped,
        ref_flow.late_queries,
    )


def test_whole_payload_fields_match_the_reference_with_every_kind_of_input() -> None:
    from flowgauge.types import FundingRate, LongShortRatio, OpenInterest, Trade

    rng = random.Random(11)
    instrument = linear_instrument()
    ref_metrics, c_metrics = InstrumentMetrics(instrument), CompiledInstrumentMetrics(instrument)
    reference, compiled = L2Book(), _core.CBook(5000)
    bids = [(round(rng.uniform(99, 100), 2), rng.uniform(0.1, 3)) for _ in range(30)]
    asks = [(round(rng.uniform(100.01, 101), 2), rng.uniform(0.1, 3)) for _ in range(30)]
    reference.load(bids, asks, 0, 0)
    compiled.load(bids, asks, 0, 0)
    ts = 10**18
    seen: set[str] = set()
    for step in range(3000):
        ts += rng.choice([10**6, 10**8, 10**9, 7 * 10**9])
        at = ts - rng.choice([0, 0, 0, 10**9])  # other streams run a little behind or ahead
        kind = rng.choice(["book"] * 5 + ["trade", "oi", "funding", "ls", "invalid"])
        trigger = "book"
        if kind == "book":
            side = rng.choice(("bids", "asks"))
            price = round(rng.uniform(99, 100), 2) if side == "bids" else round(rng.uniform(100.01, 101), 2)
            size = rng.choice((0.0, rng.uniform(0.001, 3)))
            getattr(reference, side).set(price, size)
            getattr(compiled, side).set(price, size)
            ref_metrics.on_book(reference, ts)
            c_metrics.on_book(compiled, ts)
        elif kind == "trade":
            trade = Trade("bybit", instrument.symbol, 100.0, rng.uniform(0, 2), rng.choice((1, -1)), str(step),
                          rng.random() < 0.1, at, at)  # fmt: skip
            ref_metrics.on_trade(trade)
            c_metrics.on_trade(trade)
        elif kind == "oi":
            oi = OpenInterest("bybit", instrument.symbol, rng.choice([1000.0, rng.uniform(900, 1100)]), at, at)
            ref_metrics.on_open_interest(oi)
            c_metrics.on_open_interest(oi)
            trigger = "open_interest"
        elif kind == "funding":
            funding = FundingRate("bybit", instrument.symbol, rng.choice([None, 1e-4]), rng.choice([None, 8.0]),
                                  None, rng.choice([None, 100.2]), rng.choice([None, 100.1, 0.0]), at, at)  # fmt: skip
            ref_metrics.on_funding(funding)
            c_metrics.on_funding(funding)
            trigger = "funding"
        elif kind == "ls":
            ratio = LongShortRatio("bybit", instrument.symbol, rng.choice(["accounts", "top_positions"]),
                                   rng.uniform(0, 3), at, at)  # fmt: skip
            ref_metrics.on_long_short(ratio)
            c_metrics.on_long_short(ratio)
            trigger = "long_short"
        else:
            reason = rng.choice([InvalidReason.GAP, InvalidReason.RESET])
            ref_metrics.on_book_invalid(ts, reason)
            c_metrics.on_book_invalid(ts, reason)
        valid = rng.random() > 0.05
        when = ts if trigger == "book" else at
        ours = c_metrics.fields(compiled if valid else None, when, trigger, {"envelope": 1})
        theirs = ref_metrics.fields(reference if valid else None, when, trigger, {"envelope": 1})
        assert list(ours.items()) == list(theirs.items())
        seen.update(key for key, value in ours.items() if value is not None)
    # every field took a value at some point: nothing was compared only as None
    assert seen >= {"oi_chg_pct_5m", "oi_open_ratio_5m", "premium_bps_live", "tfi_60s", "ls_skew_accounts", "ofi"}


@pytest.mark.parametrize("rule_name", ["consecutive_ids", "chained_ids", "binance_futures", "okx_books"])
def test_the_compiled_sync_decides_every_delta_as_the_reference(rule_name: str) -> None:
    from flowgauge.book import sequencing
    from flowgauge.book.sync import BookSync
    from flowgauge.types import BookDelta, BookSnapshot

    rule = getattr(sequencing, rule_name)
    rng = random.Random(rule_name)
    reference = BookSync(rule, buffer_deltas=True, book=L2Book())
    compiled = core.new_sync(core.COMPILED, rule, True)
    seq = 100
    for step in range(3000):
        if step % 400 == 0:
            bids = tuple((100.0 - i * 0.5, 1.0) for i in range(10))
            asks = tuple((100.5 + i * 0.5, 1.0) for i in range(10))
            event = BookSnapshot("x", "S", bids, asks, seq, step, step)
            outcomes = [s.on_snapshot(event) for s in (reference, compiled)]
        else:
            jump = rng.choice([1] * 20 + [0, -1, 2, 5])  # next, stale, duplicate, gaps
            prev, seq = seq, seq + jump
            side = rng.choice(("bids", "asks"))
            price = rng.uniform(95, 100.8) if side == "bids" else rng.uniform(99.7, 105)  # crossing now and then
            levels = ((round(price, 1), rng.choice((0.0, 1.0, 2.0))),)
            event = BookDelta("x", "S", levels if side == "bids" else (), levels if side == "asks" else (),
                              seq, prev if rng.random() > 0.03 else prev - 3, step, step, prev + 1)  # fmt: skip
            outcomes = [s.on_delta(event) for s in (reference, compiled)]
        ref_result, c_result = (
            (r.applied, r.reset, r.changed, r.needs_resync) for r in outcomes
        )  # the reused result objects, read at once
        assert c_result == ref_result
        assert (compiled.state, compiled.reason, compiled.detail, compiled.gaps, compiled.stale_dropped) == (
            reference.state,
            reference.reason,
            reference.detail,
            reference.gaps,
            reference.stale_dropped,
        )
        assert compiled.book.seq == reference.book.seq
        assert compiled.book.bids.levels() == reference.book.bids.levels()
        assert compiled.book.asks.levels() == reference.book.asks.levels()
    # gaps and crossings both happened (resyncs count both), so every branch was compared
    assert 0 < reference.gaps < reference.resyncs


@pytest.mark.parametrize(
    "raw",
    [
        [],
        [["100.5", "2", "0", "3"], ["100.25", "0", "0", "0"], ["1e2", "1_000", "0", "1"]],
        [[" 7.5 ", "0.000", "0", "1"]],
        [["0", "1", "0", "1"]],
        [["-1", "1", "0", "1"]],
        [["1", "-0.5", "0", "1"]],
        [["nan", "1", "0", "1"]],
        [["1", "inf", "0", "1"]],
        [["1e400", "1", "0", "1"]],
        [["abc", "1", "0", "1"]],
        [["1", "2"], ["3"]],
        [[1.0, "2", "0", "1"]],
        [("1", "2", "0", "1")],
        {"1": "2"},
        "levels",
    ],
)
def test_string_levels_give_the_okx_reference_result(raw: object) -> None:
    """The C loop returns exactly what okx._raw_levels returns for a clean list, and None wherever the reference
    refuses the input (which it then reports itself)."""
    from flowgauge.connectors import okx

    previous = core.active_core()
    core.select("python")  # okx._raw_levels runs its own loop: the reference
    try:
        try:
            expected: object = okx._raw_levels(raw)
        except ValueError:  # FrameError is one; float() of a non-number raises it too (the parser catches both)
            expected = None
    finally:
        core.select(previous)
    ours = _core.string_levels(raw)
    assert ours == expected
    if ours is not None:
        assert [tuple(map(type, level)) for level in ours] == [(str, str, float, float)] * len(ours)


def _reference_and_compiled(call: Any) -> tuple[object, object]:
    """`call()` under the pure core (the parser's own loop) and under the compiled core (its C loop), each as the
    value returned or "refused" when the parser raised (it then reports the frame as bad)."""
    results = []
    previous = core.active_core()
    try:
        for name in (core.PYTHON, core.COMPILED):
            core.select(name)
            try:
                results.append(call())
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError):  # FrameError is a ValueError
                results.append("refused")
    finally:
        core.select(previous)
    return results[0], results[1]


@pytest.mark.parametrize("usd", [False, True])
@pytest.mark.parametrize(
    "rows",
    [
        [],
        [["new", 65000.5, 10.0], ["change", 65001, 2], ["delete", 64000.0, 0.0]],
        [["new", 1.5, 0]],
        [["new", 0.0, 1.0]],
        [["change", 1.0, -1.0]],
        [["new", float("nan"), 1.0]],
        [["new", 1.0, True]],
        [["new", "1.0", 1.0]],
        [["new", 10**400, 1.0]],
        [["move", 1.0, 1.0]],
        [["new", 1.0]],
        [("new", 1.0, 1.0)],
        {"new": 1},
    ],
)
def test_deribit_levels_are_the_same_under_both_cores(rows: object, usd: bool) -> None:
    from flowgauge.connectors.deribit import DeribitParser

    instrument = linear_instrument()
    parser = object.__new__(DeribitParser)
    parser._usd = {instrument.venue_id: usd}
    reference, compiled = _reference_and_compiled(lambda: parser._levels(rows, instrument))
    assert compiled == reference
    fast = _core.action_levels(rows, usd)
    assert fast is None or fast == reference


@pytest.mark.parametrize("depth", [0, 2, 20])
@pytest.mark.parametrize(
    "side",
    [
        [],
        [{"px": "65000.5", "sz": "1.25", "n": 3}, {"px": "64999", "sz": "0.0", "n": 1}, {"px": "64998", "sz": "2"}],
        [{"px": "0", "sz": "1"}],
        [{"px": "1", "sz": "-1"}],
        [{"px": "inf", "sz": "1"}],
        [{"px": "x", "sz": "1"}],
        [{"px": 1.0, "sz": "1"}],
        [{"sz": "1"}],
        [["1", "1"]],
        "side",
    ],
)
def test_hyperliquid_levels_are_the_same_under_both_cores(side: object, depth: int) -> None:
    from flowgauge.connectors.hyperliquid import _book_side

    instrument = linear_instrument()
    reference, compiled = _reference_and_compiled(lambda: _book_side(side, instrument, depth))
    assert compiled == reference
    fast = _core.dict_levels(side, depth, instrument.contract_size)
    assert fast is None or fast == reference
