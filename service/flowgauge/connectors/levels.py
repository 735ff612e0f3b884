"""Shared helpers for price levels decoded by venue parsers' typed fast paths (sans-I/O)."""

from __future__ import annotations

from collections.abc import Callable

from flowgauge.types import ContractKind, Instrument, Level

_INF = float("inf")

DecodedLevels = tuple[tuple[float, float], ...]


def valid_levels(levels: DecodedLevels) -> bool:
    """Prices > 0, sizes >= 0, nothing NaN or infinite (the sum of every price and size must be finite).

    The parsers' typed fast paths call this for every book frame; a False sends the frame down the generic
    path, which reports what is wrong. It runs `_validator`: the reference below, or the compiled core's
    identical C loop once `flowgauge.core` installs it (connectors do not import the core: it sits above them).
    """
    return _validator(levels)


def reference_valid_levels(levels: DecodedLevels) -> bool:
    """`valid_levels` with C-level reductions, not a Python loop: the definition the compiled core mirrors."""
    if not levels:
        return True
    prices, sizes = zip(*levels, strict=True)
    total = sum(prices) + sum(sizes)
    return min(prices) > 0.0 and min(sizes) >= 0.0 and total == total and total != _INF


_validator: Callable[[DecodedLevels], bool] = reference_valid_levels


def install_validator(validator: Callable[[DecodedLevels], bool] | None) -> None:
    """Use `validator` (same verdicts as `reference_valid_levels`) in `valid_levels`; None restores the reference."""
    global _validator
    _validator = validator if validator is not None else reference_valid_levels


def to_base(levels: DecodedLevels, instrument: Instrument) -> tuple[Level, ...]:
    """Venue quantities to base units; a linear contract of size 1 is already base (no copy)."""
    if instrument.kind is ContractKind.LINEAR and instrument.contract_size == 1.0:
        return levels
    return tuple((p, instrument.base_size(q, p)) for p, q in levels)
