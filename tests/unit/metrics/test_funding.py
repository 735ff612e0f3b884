"""Funding rescale to 8 h, live premium, and the "None means unchanged" funding state."""

from __future__ import annotations

import pytest

from flowgauge.metrics.funding import FundingState, funding_rate_8h, premium_bps
from flowgauge.types import FundingRate


@pytest.mark.parametrize(
    ("rate", "hours", "expected"),
    [(0.0001, 8.0, 0.0001), (0.0001, 4.0, 0.0002), (0.0001, 1.0, 0.0008), (-0.0003, 16.0, -0.00015)],
)
def test_funding_rescaled_to_8h(rate: float, hours: float, expected: float) -> None:
    assert funding_rate_8h(rate, hours) == pytest.approx(expected, abs=1e-18)


def test_funding_unknown_is_none() -> None:
    assert funding_rate_8h(None, 8.0) is None
    assert funding_rate_8h(0.0001, None) is None
    assert funding_rate_8h(0.0001, 0.0) is None


def test_premium_bps() -> None:
    assert premium_bps(100.5, 100.0) == pytest.approx(50.0, abs=1e-9)
    assert premium_bps(99.0, 100.0) == pytest.approx(-100.0, abs=1e-9)
    assert premium_bps(None, 100.0) is None
    assert premium_bps(100.0, None) is None


def _funding(**kw: object) -> FundingRate:
    base: dict[str, object] = {
        "venue": "bybit",
        "symbol": "BTC/USDT:USDT",
        "rate": None,
        "interval_hours": None,
        "next_funding_ts": None,
        "mark_price": None,
        "index_price": None,
        "ts_exchange": 1,
        "ts_recv": 2,
    }
    base.update(kw)
    return FundingRate(**base)  # type: ignore[arg-type]


def test_funding_state_none_means_unchanged() -> None:
    state = FundingState()
    state.update(_funding(rate=0.0001, interval_hours=8.0, mark_price=65117.44, index_price=65137.76))
    state.update(_funding(mark_price=65120.0, ts_exchange=5))
    assert state.rate == 0.0001
    assert state.interval_hours == 8.0
    assert state.mark_price == 65120.0
    assert state.index_price == 65137.76
    assert state.rate_8h() == pytest.approx(0.0001, abs=1e-18)
    state.update(_funding(interval_hours=4.0, ts_exchange=6))
    assert state.rate_8h() == pytest.approx(0.0002, abs=1e-18)
