"""Shared test helpers. Fixtures live in tests/fixtures; nothing here reads ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowgauge.types import ContractKind, Instrument

FIXTURES = Path(__file__).parent / "fixtures"
BYBIT_RECORDING = FIXTURES / "bybit" / "bybit-linear-2026-08.jsonl.zst"


def linear_instrument(symbol: str = "BTC/USDT:USDT", venue_id: str = "BTCUSDT", tick: float = 0.1) -> Instrument:
    base, rest = symbol.split("/")
    quote, settle = rest.split(":")
    return Instrument(
        venue="bybit",
        symbol=symbol,
        venue_id=venue_id,
        category="linear",
        kind=ContractKind.LINEAR,
        contract_size=1.0,
        tick_size=tick,
        base=base,
        quote=quote,
        settle=settle,
        derivative=True,
    )


@pytest.fixture
def btc() -> Instrument:
    return linear_instrument()
