"""OI change and the net opening ratio between OI observations (metrics.md §6.2)."""

from __future__ import annotations

import pytest

from flowgauge.metrics.open_interest import OI_STALE_POLLS, OpenInterestFlow

S = 1_000_000_000
MIN = 60 * S
W = 5 * MIN


def test_single_observation_has_no_change() -> None:
    flow = OpenInterestFlow(W)
    flow.on_trade(1, 5.0)
    flow.on_open_interest(10, 100.0)
    assert flow.oi == 100.0
    assert flow.chg_pct is None
    assert flow.open_ratio is None
    assert not flow.partial
    assert not flow.inconsistent


def test_ratio_and_change_with_partial_history() -> None:
    flow = OpenInterestFlow(W)
    flow.on_open_interest(0, 100.0)
    flow.on_trade(10 * S, 6.0)
    flow.on_trade(20 * S, 4.0)
    flow.on_open_interest(MIN, 104.0)
    assert flow.volume_in_window() == 10.0
    assert flow.open_ratio == pytest.approx(0.4, abs=1e-15)
    # no observation at or before t - 5 min: the 5-minute change is unknown, not the change since the first one
    assert flow.chg_pct is None
    assert flow.partial  # only 1 min of the 5 min history: the ratio is taken since the oldest observation
    assert not flow.inconsistent


def test_change_once_an_observation_at_or_before_t_minus_window_exists() -> None:
    flow = OpenInterestFlow(W)
    flow.on_open_interest(0, 100.0)
    flow.on_open_interest(W - 1, 101.0)
    assert flow.chg_pct is None
    flow.on_open_interest(W, 102.0)  # the observation at t - 5 min exactly is the reference
    assert flow.chg_pct == pytest.approx(0.02, abs=1e-15)  # a fraction, not percent
    assert not flow.partial


def test_volume_zero_and_oi_unchanged_is_null() -> None:
    """No trades: 0/0 is unknown, published null, not 0.0 (issue 11 item 2)."""
    flow = OpenInterestFlow(W)
    flow.on_open_interest(0, 100.0)
    flow.on_open_interest(W, 100.0)
    assert flow.open_ratio is None
    assert flow.consistency is None
    assert flow.chg_pct == 0.0
    assert not flow.inconsistent


def test_volume_zero_and_oi_changed_is_null_and_inconsistent() -> None:
    flow = OpenInterestFlow(W)
    flow.on_open_interest(0, 100.0)
    flow.on_open_interest(W, 101.0)
    assert flow.open_ratio is None
    assert flow.inconsistent
    assert flow.chg_pct == pytest.approx(0.01, abs=1e-15)


def test_clip_and_inconsistent_flag() -> None:
    flow = OpenInterestFlow(W)
    flow.on_open_interest(0, 100.0)
    flow.on_trade(S, 10.0)
    flow.on_open_interest(2 * S, 112.0)  # |dOI| / V = 1.2 > 1.02
    assert flow.open_ratio == 1.0
    assert flow.consistency == pytest.approx(1.2, abs=1e-12)
    assert flow.inconsistent
    flow2 = OpenInterestFlow(W)
    flow2.on_open_interest(0, 100.0)
    flow2.on_trade(S, 10.0)
    flow2.on_open_interest(2 * S, 89.9)  # -10.1 / 10 = -1.01: clipped, within the 2% tolerance
    assert flow2.open_ratio == -1.0
    assert not flow2.inconsistent


def test_reference_is_latest_observation_at_or_before_t_minus_window() -> None:
    flow = OpenInterestFlow(W)
    flow.on_open_interest(0, 100.0)
    flow.on_trade(30 * S, 1.0)  # in (0, 2m]
    flow.on_open_interest(2 * MIN, 101.0)
    flow.on_trade(3 * MIN, 2.0)  # in (2m, 4m]
    flow.on_open_interest(4 * MIN, 102.0)
    flow.on_trade(5 * MIN, 4.0)  # in (4m, 6m]
    flow.on_open_interest(6 * MIN, 103.0)
    # edge = 1m: the reference is the observation at 0, a full window
    assert not flow.partial
    assert flow.volume_in_window() == 7.0
    assert flow.open_ratio == pytest.approx(3.0 / 7.0, abs=1e-15)
    flow.on_trade(7 * MIN, 8.0)  # exactly at the next observation: belongs to (6m, 7m]
    flow.on_open_interest(7 * MIN, 104.0)
    # edge = 2m: the observation exactly at 2m is the reference; the trade at 30 s has left
    assert flow.volume_in_window() == 2.0 + 4.0 + 8.0
    assert flow.chg_pct == pytest.approx(3.0 / 101.0, abs=1e-15)
    assert flow.open_ratio == pytest.approx(3.0 / 14.0, abs=1e-15)


def test_trade_at_reference_time_is_excluded() -> None:
    flow = OpenInterestFlow(W)
    flow.on_trade(0, 50.0)
    flow.on_open_interest(0, 100.0)
    flow.on_trade(S, 2.0)
    flow.on_open_interest(2 * S, 101.0)
    assert flow.volume_in_window() == 2.0
    assert flow.open_ratio == 0.5


def test_late_trade_counts_in_its_interval() -> None:
    """A trade stamped before an OI observation but delivered after it still counts (different streams)."""
    flow = OpenInterestFlow(W)
    flow.on_open_interest(0, 100.0)
    flow.on_open_interest(10 * S, 100.0)
    flow.on_trade(5 * S, 3.0)  # late: belongs to (0, 10s]
    flow.on_trade(12 * S, 1.0)  # early for the next observation
    flow.on_open_interest(11 * S, 102.0)
    assert flow.volume_in_window() == 3.0  # the trade at 12 s waits for an observation at or after it
    assert flow.open_ratio == pytest.approx(2.0 / 3.0, abs=1e-15)
    flow.on_open_interest(12 * S, 102.0)
    assert flow.volume_in_window() == 4.0


def test_late_trade_before_reference_is_dropped() -> None:
    flow = OpenInterestFlow(W)
    flow.on_open_interest(10 * S, 100.0)
    flow.on_trade(5 * S, 3.0)
    assert flow.late_dropped == 1
    flow.on_open_interest(20 * S, 100.0)
    assert flow.volume_in_window() == 0.0


def test_out_of_order_observation_is_ignored() -> None:
    flow = OpenInterestFlow(W)
    flow.on_open_interest(10 * S, 100.0)
    flow.on_open_interest(5 * S, 50.0)
    assert flow.oi == 100.0
    assert flow.late_dropped == 1


def test_reference_oi_zero_gives_null_change() -> None:
    flow = OpenInterestFlow(W)
    flow.on_open_interest(0, 0.0)
    flow.on_trade(1, 5.0)
    flow.on_open_interest(2, 5.0)
    assert flow.chg_pct is None
    assert flow.open_ratio == 1.0


def test_unchanged_oi_while_trading_becomes_stale() -> None:
    flow = OpenInterestFlow(W)
    flow.on_open_interest(0, 100.0)
    for i in range(1, OI_STALE_POLLS + 1):
        assert not flow.stale
        flow.on_trade(i * S - 1, 1.0)
        flow.on_open_interest(i * S, 100.0)
    assert flow.stale
    flow.on_open_interest((OI_STALE_POLLS + 1) * S, 100.5)
    assert not flow.stale


def test_pending_trades_fold_when_oi_feed_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trades piling up after the last OI observation are folded (bounded memory) without losing volume."""
    import flowgauge.metrics.open_interest as oi_module

    monkeypatch.setattr(oi_module, "_MAX_PENDING_TRADES", 4)
    flow = OpenInterestFlow(W)
    flow.on_open_interest(0, 100.0)
    for i in range(1, 11):
        flow.on_trade(i * S, 0.5)
    assert len(flow._pending) <= 4
    flow.on_open_interest(20 * S, 102.0)
    assert flow.volume_in_window() == 5.0
    assert flow.open_ratio == pytest.approx(0.4, abs=1e-15)
