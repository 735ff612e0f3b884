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


def reference_valid_sides(bids: DecodedLevels, asks: DecodedLevels) -> bool:
    """Both sides of a book message pass `reference_valid_levels`."""
    return reference_valid_levels(bids) and reference_valid_levels(asks)


_validator: Callable[[DecodedLevels], bool] = reference_valid_levels

valid_sides: Callable[[DecodedLevels, DecodedLevels], bool] = reference_valid_sides
"""`valid_levels` of both sides in one call, for the typed fast paths. Rebound by `install_validator`: call it as
`levels.valid_sides(...)` (through the module), so the binding in use is the current one and no Python frame
stands between the parser and the compiled loop."""


def install_validator(
    validator: Callable[[DecodedLevels], bool] | None,
    sides: Callable[[DecodedLevels, DecodedLevels], bool] | None = None,
    strings: Callable[[object], list[tuple[str, str, float, float]] | None] | None = None,
) -> None:
    """Use `validator` (same verdicts as `reference_valid_levels`) in `valid_levels`, and `sides` (same verdicts as
    `reference_valid_sides`) as `valid_sides`, and `strings` as `string_levels`; None restores the reference."""
    global _validator, valid_sides, string_levels
    _validator = validator if validator is not None else reference_valid_levels
    valid_sides = sides if validator is not None and sides is not None else reference_valid_sides
    string_levels = strings if validator is not None and strings is not None else no_fast_string_levels


def no_fast_string_levels(raw: object) -> None:
    """The reference core has no fast path for string levels: the parser's own loop always runs."""
    return None


string_levels: Callable[[object], list[tuple[str, str, float, float]] | None] = no_fast_string_levels
"""OKX's `[[px, sz, ...], ...]` checked and converted in one C call when the compiled core is active (None: use
the parser's reference loop, which also reports what is wrong). Rebound by `install_validator`; call it through
the module."""


def already_base(instrument: Instrument) -> bool:
    """The venue's quantities are base units already (`to_base` would return its input)."""
    return instrument.kind is ContractKind.LINEAR and instrument.contract_size == 1.0


def to_base(levels: DecodedLevels, instrument: Instrument) -> tuple[Level, ...]:
    """Venue quantities to base units; a linear contract of size 1 is already base (no copy)."""
    if already_base(instrument):
        return levels
    return tuple((p, instrument.base_size(q, p)) for p, q in levels)
