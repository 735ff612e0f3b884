"""Liquidity-fragility metrics of one book state (metrics.md §7): impact cost, book slope, OFI stress.

Pure, synchronous metric math over a VALID book's sides, read only through `top(n)` (best first) and `__len__`,
which the pure-Python book (`book.l2.BookSide`) and the compiled core's (`CBookSide`) both offer with the same
values; so one source computes the same bits in both cores. Plain float arithmetic, no numpy. All are unsigned,
higher = more fragile except the book slope (higher = deeper, more resilient book). Undefined values are None
(metrics.md §0.2.6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["DEFAULT_NOTIONALS", "DEFAULT_SLOPE_LEVELS", "BookSideView", "book_slope", "impact_costs", "ofi_stress"]

DEFAULT_NOTIONALS: tuple[float, ...] = (10_000.0, 100_000.0, 1_000_000.0)
"""Market-order sizes (quote notional) of `impact_cost_bps_*` (metrics.md §9: $10k / $100k / $1M)."""

DEFAULT_SLOPE_LEVELS = 10
"""Levels per side in the book slope (metrics.md §7 leaves L open; 10 is the multi-level OFI depth of §2)."""

_FIRST_FETCH = 32  # levels read first when walking a side without a hint; doubled until filled or the side ends
_FAR = 1e300  # a price beyond every ask: notional_within(_FAR) is the asks' whole notional


class BookSideView(Protocol):
    """What these functions read of a book side: its level count, its best `n` levels as (price, size), and the
    notional of its levels at or better than a price."""

    def __len__(self) -> int: ...
    def top(self, n: int) -> list[tuple[float, float]]: ...
    def notional_within(self, limit_price: float) -> float: ...


def impact_costs(
    side: BookSideView, mid: float, notionals: Sequence[float], buy: bool, hint: int = _FIRST_FETCH
) -> tuple[list[float | None], bool, int]:
    """Cost in bps of mid of a market order of each quote notional, walking `side` from its best level.

    The order of notional `N` fills `N` of quote currency level by level (a level's notional is `price*size`),
    taking only part of the last level it reaches; its average fill price is `VWAP_N = N / base filled`. The cost
    is `(VWAP_N - mid) / mid * 1e4` for a buy (walking the asks) and `(mid - VWAP_N) / mid * 1e4` for a sell
    (walking the bids): what crossing the book costs beyond the mid, half-spread included.

    Args:
        side: the asks for a buy, the bids for a sell.
        mid: the same state's mid (> 0).
        notionals: order sizes in quote currency, ascending, each > 0.
        buy: True for a buy (asks), False for a sell (bids).
        hint: how many levels to read first (the caller passes what the previous state needed, so one read of the
            side usually suffices; more are read, doubling, when it does not).

    Returns:
        The cost for each notional (None where the visible side holds less than the order: exhausted), whether
        any was exhausted (the caller's coverage flag), and how many levels the walk read (the next hint).
    """
    n = len(notionals)
    out: list[float | None] = [None] * n
    depth = len(side)
    if depth == 0:
        return out, n > 0, 0
    # The side's whole notional (one summation in the book; C in the compiled core): orders beyond it are
    # exhausted without walking every level for nothing. The walk below still decides each value on its own sums.
    total = side.notional_within(_FAR if buy else 0.0)
    wanted = n
    while wanted > 0 and notionals[wanted - 1] > total:
        wanted -= 1
    fetched = min(depth, max(hint, 1))
    levels = side.top(fetched)
    fetched = len(levels)
    filled_quote = 0.0  # notional filled so far, over whole levels
    filled_base = 0.0
    i = 0  # next level to take
    k = 0  # next notional to price
    while k < wanted:
        if i == fetched:
            if fetched >= depth:
                break
            fetched = min(depth, fetched * 2)
            levels = side.top(fetched)
            fetched = len(levels)
            if i >= fetched:
                break
        price, size = levels[i]
        level_quote = price * size
        # every notional this level completes
        while k < wanted and filled_quote + level_quote >= notionals[k]:
            target = notionals[k]
            base = filled_base + (target - filled_quote) / price
            vwap = target / base
            out[k] = (vwap - mid) / mid * 1e4 if buy else (mid - vwap) / mid * 1e4
            k += 1
        filled_quote += level_quote
        filled_base += size
        i += 1
    return out, k < n, i


def book_slope(side: BookSideView, mid: float, levels: int) -> tuple[float | None, bool]:
    """Næs–Skjeltorp elasticity of one side (metrics.md §7 `book_slope_{side}`), over its best `levels` levels.

    `slope = (1/L) * [ v_1 / |p_1/mid - 1| + sum_{t=1}^{L-1} (v_{t+1}/v_t - 1) / |p_{t+1}/p_t - 1| ]`, `v_t` the
    cumulative size (base units) of the best `t` levels: how fast resting size grows as the price moves away from
    the mid. Higher = a steeper, deeper book; lower = thinner (more fragile).

    Returns:
        (slope, short): None for an empty side; `short` is True when the side holds fewer than `levels` levels
        (the slope is then over the levels there are, L = their count).
    """
    top = side.top(levels)
    count = len(top)
    if count == 0 or not mid > 0.0:
        return None, levels > 0
    price, size = top[0]
    away = abs(price / mid - 1.0)
    if not away > 0.0:
        return None, count < levels  # a level at the mid: a locked book has no slope
    total = size / away
    cum = size
    prev_price = price
    for t in range(1, count):
        price, size = top[t]
        step = abs(price / prev_price - 1.0)
        if step > 0.0:
            total += size / cum / step  # (v_{t+1}/v_t - 1) = q_{t+1}/v_t
        cum += size
        prev_price = price
    return total / count, count < levels


def ofi_stress(
    ofi_window: float | None, mid: float | None, depth_bid: float | None, depth_ask: float | None
) -> float | None:
    """`|ofi_notional_T| / depth_total_10bps` (metrics.md §7): window OFI (base units, at the mid) over the
    resting quote notional within 10 bps. Dimensionless; None without a mid, a window or any depth."""
    if ofi_window is None or mid is None or depth_bid is None or depth_ask is None:
        return None
    depth = depth_bid + depth_ask
    if not depth > 0.0:
        return None
    return abs(ofi_window * mid) / depth
