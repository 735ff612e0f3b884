"""Book-state metrics: mid, spread, weighted mid, level depth imbalance, band depth (metrics.md §3, §4.1, §7).

Pure, synchronous metric math over an `L2Book` that the caller knows to be VALID: no I/O, no asyncio, no
prometheus_client, no state kept between calls. Undefined values are None, never a made-up 0
(metrics.md §0.2.6). Sizes are base units, depth notionals quote currency.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

from flowgauge.book.l2 import L2Book

__all__ = ["band_depth", "depth_imbalances", "mid_price", "spread_bps", "weighted_mid"]


def mid_price(bid_px: float | None, ask_px: float | None) -> float | None:
    """(bid + ask) / 2; None when either side is empty."""
    if bid_px is None or ask_px is None:
        return None
    return (bid_px + ask_px) * 0.5


def spread_bps(bid_px: float | None, ask_px: float | None) -> float | None:
    """(ask - bid) / mid * 1e4; None when either side is empty or the mid is not positive."""
    if bid_px is None or ask_px is None:
        return None
    mid = (bid_px + ask_px) * 0.5
    if mid <= 0.0:
        return None
    return (ask_px - bid_px) / mid * 1e4


def weighted_mid(
    bid_px: float | None, bid_sz: float | None, ask_px: float | None, ask_sz: float | None
) -> float | None:
    """`I*ask + (1-I)*bid` with `I = q_bid / (q_bid + q_ask)` (§4.1): leans to the side about to be hit."""
    if bid_px is None or ask_px is None or bid_sz is None or ask_sz is None:
        return None
    total = bid_sz + ask_sz
    if total <= 0.0:
        return None
    imb = bid_sz / total
    return imb * ask_px + (1.0 - imb) * bid_px


def depth_imbalances(book: L2Book, levels: Sequence[int]) -> tuple[list[float | None], bool]:
    """Unweighted `(sum bid sz - sum ask sz) / (sum bid + sum ask)` over the top N levels, for each N.

    Args:
        book: the current (valid) book.
        levels: level counts, ascending (e.g. (1, 5, 10, 20)).

    Returns:
        The imbalance for each N (None when both sides are empty; +-1 when one side is) and whether exactly
        one side is empty (the caller's EMPTY_SIDE flag, §3.3).
    """
    deepest = levels[-1] if levels else 0
    bid_sums = list(accumulate(book.bids.top_sizes(deepest)))
    ask_sums = list(accumulate(book.asks.top_sizes(deepest)))
    empty_side = (not bid_sums) != (not ask_sums)
    out: list[float | None] = []
    # Running sums, left to right from the best level: the total for N is the plain sequential sum of the
    # best N sizes, so it does not depend on which other N were asked for (and is bit-identical to it).
    n_bids = len(bid_sums)
    n_asks = len(ask_sums)
    for n in levels:
        bid_sum = bid_sums[min(n, n_bids) - 1] if n_bids and n > 0 else 0.0
        ask_sum = ask_sums[min(n, n_asks) - 1] if n_asks and n > 0 else 0.0
        total = bid_sum + ask_sum
        out.append((bid_sum - ask_sum) / total if total > 0.0 else None)
    return out, empty_side


def band_depth(book: L2Book, mid: float, band_bps: float) -> tuple[float, float, bool, bool]:
    """Quote notional resting within `band_bps` of `mid` on each side (metrics.md §7 `depth_bid_X/ask_X`).

    Bids count when `p >= mid*(1 - X/1e4)`, asks when `p <= mid*(1 + X/1e4)`.

    Returns:
        (bid notional, ask notional, bid exhausted, ask exhausted): a side is exhausted when it is non-empty
        and its deepest level is inside the band, i.e. the feed's depth does not reach the band edge and the
        value may be truncated (the caller's `coverage` EXHAUSTED and PARTIAL_WINDOW flag, §3.3).
    """
    frac = band_bps / 1e4
    bid_limit = mid * (1.0 - frac)
    ask_limit = mid * (1.0 + frac)
    # float(): the book's sum over no levels is the int 0, and payloads carry floats only
    bid_notional = float(book.bids.notional_within(bid_limit))
    ask_notional = float(book.asks.notional_within(ask_limit))
    bid_deepest = book.bids.worst_price()
    ask_deepest = book.asks.worst_price()
    bid_short = bid_deepest is not None and bid_deepest > bid_limit
    ask_short = ask_deepest is not None and ask_deepest < ask_limit
    return bid_notional, ask_notional, bid_short, ask_short
