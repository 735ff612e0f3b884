"""Shared helpers for price levels decoded by venue parsers' typed fast paths (sans-I/O)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowgauge.types import ContractKind, Instrument, Level

# The range a level's numbers must lie in, on every path (typed fast paths, generic loops, both cores). Beyond
# finiteness: a size of 1e308 is finite, but its notional, a depth sum or an inverse contract's base size
# (size * contract / price, with a price of 5e-324) overflows to infinity and a VALID book would publish inf and
# NaN. Within [MIN_PRICE, MAX_LEVEL_VALUE) every product and sum the metrics form stays finite, with room to
# spare for any real market (sizes up to 1e18 units, prices from 1e-18).
MIN_PRICE = 1e-18
MAX_LEVEL_VALUE = 1e18

DecodedLevels = tuple[tuple[float, float], ...]


def valid_levels(levels: DecodedLevels) -> bool:
    """Prices in [MIN_PRICE, MAX_LEVEL_VALUE), sizes in [0, MAX_LEVEL_VALUE), nothing NaN (the sum of every price
    and size must be a number).

    The parsers' typed fast paths call this for every book frame; a False sends the frame down the generic
    path, which reports what is wrong. It runs `_validator`: the reference below, or the compiled core's
    identical C loop once `flowgauge.core` installs it with `install_compiled` (connectors do not import the core:
    it sits above them).
    """
    return _validator(levels)


def reference_valid_levels(levels: DecodedLevels) -> bool:
    """`valid_levels` with C-level reductions, not a Python loop: the definition the compiled core mirrors."""
    if not levels:
        return True
    prices, sizes = zip(*levels, strict=True)
    total = sum(prices) + sum(sizes)
    return (
        min(prices) >= MIN_PRICE
        and min(sizes) >= 0.0
        and max(prices) < MAX_LEVEL_VALUE
        and max(sizes) < MAX_LEVEL_VALUE
        and total == total
    )


def valid_level(price: float, size: float) -> bool:
    """One level in range (the generic loops' check, the same bounds as `valid_levels`); NaN fails."""
    return MIN_PRICE <= price < MAX_LEVEL_VALUE and 0.0 <= size < MAX_LEVEL_VALUE


def reference_valid_sides(bids: DecodedLevels, asks: DecodedLevels) -> bool:
    """Both sides of a book message pass `reference_valid_levels`."""
    return reference_valid_levels(bids) and reference_valid_levels(asks)


_validator: Callable[[DecodedLevels], bool] = reference_valid_levels

valid_sides: Callable[[DecodedLevels, DecodedLevels], bool] = reference_valid_sides
"""`valid_levels` of both sides in one call, for the typed fast paths. Rebound by `install_validator`: call it as
`levels.valid_sides(...)` (through the module), so the binding in use is the current one and no Python frame
stands between the parser and the compiled loop."""


def _no_fast_path(*args: object) -> None:
    """The reference core has no C loop here: the parser's own (reference) loop always runs."""
    return None


FastLevels = Callable[..., Any]

string_levels: FastLevels = _no_fast_path
"""OKX's `[[px, sz, ...], ...]` -> the same list as okx._raw_levels, or None (then the parser's reference loop
runs and reports what is wrong)."""
action_levels: FastLevels = _no_fast_path
"""Deribit's `[[action, price, amount], ...]`, `usd` -> the same tuple as DeribitParser._levels, or None."""
dict_levels: FastLevels = _no_fast_path
"""Hyperliquid's `[{"px", "sz", ...}, ...]`, depth, linear multiplier -> the same tuple as hyperliquid._book_side,
or None."""
# Each is rebound by `install_compiled`: parsers call them through this module (`levels.string_levels(...)`), so
# the binding in use is the current one and no Python frame stands between the parser and the C loop.


def install_compiled(core: Any | None) -> None:
    """Use the compiled core's loops (the same verdicts and values as the references) for `valid_levels`,
    `valid_sides` and the parsers' fast level paths; None restores the references."""
    global _validator, valid_sides, string_levels, action_levels, dict_levels
    if core is None:
        _validator, valid_sides = reference_valid_levels, reference_valid_sides
        string_levels = action_levels = dict_levels = _no_fast_path
        return
    _validator, valid_sides = core.valid_levels, core.valid_sides
    string_levels, action_levels, dict_levels = core.string_levels, core.action_levels, core.dict_levels


def already_base(instrument: Instrument) -> bool:
    """The venue's quantities are base units already (`to_base` would return its input)."""
    return instrument.kind is ContractKind.LINEAR and instrument.contract_size == 1.0


def to_base(levels: DecodedLevels, instrument: Instrument) -> tuple[Level, ...]:
    """Venue quantities to base units; a linear contract of size 1 is already base (no copy)."""
    if already_base(instrument):
        return levels
    return tuple((p, instrument.base_size(q, p)) for p, q in levels)
