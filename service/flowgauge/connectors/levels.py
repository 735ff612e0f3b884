"""Shared helpers for price levels decoded by venue parsers' typed fast paths (sans-I/O)."""

from __future__ import annotations

from flowgauge.types import ContractKind, Instrument, Level

_INF = float("inf")

DecodedLevels = tuple[tuple[float, float], ...]


def valid_levels(levels: DecodedLevels) -> bool:
    """Prices > 0, sizes >= 0, nothing NaN or infinite; checked with C-level reductions, not a Python loop."""
    if not levels:
        return True
    prices, sizes = zip(*levels, strict=True)
    total = sum(prices) + sum(sizes)
    return min(prices) > 0.0 and min(sizes) >= 0.0 and total == total and total != _INF


def to_base(levels: DecodedLevels, instrument: Instrument) -> tuple[Level, ...]:
    """Venue quantities to base units; a linear contract of size 1 is already base (no copy)."""
    if instrument.kind is ContractKind.LINEAR and instrument.contract_size == 1.0:
        return levels
    return tuple((p, instrument.base_size(q, p)) for p, q in levels)
