"""Clock bars (metrics.md §0.3): bar boundaries, empty bars carried forward, late and early trades, bounds."""

from __future__ import annotations

import math

from flowgauge.metrics.bars import MAX_CATCH_UP, MAX_PENDING_TRADES, ClockBars

S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_a_state_in_a_new_bar_closes_the_bars_before_it_empty_ones_too() -> None:
    bars = ClockBars(S)
    assert bars.on_book(T0 + 100, 100.0, None, 1.0, 500.0) == []
    assert bars.on_book(T0 + 200, 101.0, 2.0, 1.5, 400.0) == []
    bars.on_trade(T0 + 300, 1, 0.5)
    bars.on_trade(T0 + 400, -1, 0.25)
    closed = bars.on_book(T0 + 3 * S + 5, 102.0, -1.0, 2.0, 300.0)
    assert [b.index for b in closed] == [T0 // S, T0 // S + 1, T0 // S + 2]
    first, empty1, empty2 = closed
    assert (first.n_events, first.ofi, first.buy_volume, first.sell_volume, first.n_trades) == (2, 2.0, 0.5, 0.25, 2)
    assert (first.mid_open, first.mid_high, first.mid_low, first.mid_close) == (100.0, 101.0, 100.0, 101.0)
    assert first.prev_close is None and first.log_return() is None
    for bar in (empty1, empty2):  # state carried forward, no flow
        assert (bar.n_events, bar.ofi, bar.n_trades) == (0, 0.0, 0)
        assert bar.mid_open == bar.mid_close == 101.0
        assert (bar.spread_close, bar.depth_close) == (1.5, 400.0)
        assert bar.log_return() == 0.0
    assert bars.open_index == T0 // S + 3


def test_return_is_log_close_over_previous_close() -> None:
    bars = ClockBars(S)
    bars.on_book(T0, 100.0, None, 1.0, 1.0)
    bars.on_book(T0 + S, 110.0, 0.0, 1.0, 1.0)
    (bar,) = bars.on_book(T0 + 2 * S, 110.0, 0.0, 1.0, 1.0)
    assert bar.log_return() == math.log(110.0 / 100.0)


def test_the_timer_closes_bars_without_events_and_a_late_trade_is_counted() -> None:
    bars = ClockBars(S)
    assert bars.close_until(T0) == []  # nothing open yet
    bars.on_book(T0 + 10, 100.0, None, 1.0, 1.0)
    assert bars.close_until(T0 + S - 1) == []  # the bar has not ended
    closed = bars.close_until(T0 + 2 * S)
    assert [b.index for b in closed] == [T0 // S, T0 // S + 1]
    bars.on_trade(T0 + S + 1, 1, 1.0)  # its bar is published already: never changed afterwards
    assert bars.late_trades == 1
    assert closed[1].n_trades == 0


def test_a_trade_ahead_of_the_book_waits_for_its_bar() -> None:
    bars = ClockBars(S)
    bars.on_book(T0, 100.0, None, 1.0, 1.0)
    bars.on_trade(T0 + 2 * S + 1, -1, 3.0)
    bars.on_trade(T0 + S + 1, 1, 1.0)  # out of order among the waiting ones
    closed = bars.on_book(T0 + 3 * S, 100.0, 0.0, 1.0, 1.0)
    assert [(b.buy_volume, b.sell_volume) for b in closed] == [(0.0, 0.0), (1.0, 0.0), (0.0, 3.0)]


def test_waiting_trades_are_bounded() -> None:
    bars = ClockBars(S)
    bars.on_book(T0, 100.0, None, 1.0, 1.0)
    for k in range(MAX_PENDING_TRADES + 5):
        bars.on_trade(T0 + 5 * S + k, 1, 1.0)
    assert bars.pending_dropped == 5


def test_an_invalid_book_marks_its_bars_and_leaves_no_return() -> None:
    bars = ClockBars(S)
    bars.on_book(T0, 100.0, None, 1.0, 1.0)
    closed = bars.on_invalid(T0 + S + 5)  # closes the first bar
    closed += bars.on_book(T0 + 3 * S, 105.0, None, 1.0, 1.0)
    # the first bar too: the book was not VALID before its first state (the bar covers less than its length)
    assert [b.invalid for b in closed] == [True, True, True]
    assert closed[1].mid_close is None and closed[2].mid_open is None
    assert all(b.log_return() is None for b in closed[1:])
    (resynced,) = bars.on_book(T0 + 4 * S, 105.0, 0.0, 1.0, 1.0)
    assert resynced.invalid and resynced.log_return() is None  # invalid until its first state: no return over a gap
    (after,) = bars.on_book(T0 + 5 * S, 106.0, 0.0, 1.0, 1.0)
    assert not after.invalid and after.log_return() == 0.0


def test_a_jump_ahead_emits_a_bounded_number_of_bars() -> None:
    bars = ClockBars(S)
    bars.on_book(T0, 100.0, None, 1.0, 1.0)
    closed = bars.on_book(T0 + MAX_CATCH_UP * S, 100.0, None, 1.0, 1.0)  # a gap of MAX_CATCH_UP - 1: filled
    assert len(closed) == MAX_CATCH_UP and bars.skipped_bars == 0
    closed = bars.on_book(T0 + 10 * MAX_CATCH_UP * S, 100.0, None, 1.0, 1.0)  # too long: not filled, counted
    assert [b.index for b in closed] == [T0 // S + MAX_CATCH_UP]
    assert bars.skipped_bars == 9 * MAX_CATCH_UP - 1


def test_a_bogus_future_stamp_does_not_stall_the_bars() -> None:
    bars = ClockBars(S)
    bars.on_book(T0, 100.0, None, 1.0, 1.0)
    year = 365 * 24 * 3600
    assert [b.index for b in bars.on_book(T0 + year * S, 100.0, 1.0, 1.0, 1.0)] == [T0 // S]  # gap not filled
    back = bars.on_book(T0 + 2 * S, 100.0, 2.0, 1.0, 1.0)  # the venue's real time again: the bars restart there
    assert [b.index for b in back] == [T0 // S + year] and bars.clock_restarts == 1
    assert bars.open_index == T0 // S + 2
    (bar,) = bars.on_book(T0 + 3 * S, 101.0, 0.0, 1.0, 1.0)
    assert bar.index == T0 // S + 2 and bar.ofi == 2.0 and bar.prev_close is None  # no return across the restart
    assert bars.close_until(T0) == []  # the timer never restarts anything
