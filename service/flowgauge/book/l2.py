"""The L2 order book of one instrument: price -> size per side, plus each side's sorted prices.

Pure, synchronous, no I/O. Sizes are base units. The book never validates sequence numbers (that
is `book.sync`); it only applies levels and answers questions metrics ask about the current state.
Prices are float keys parsed from the venue's decimal strings: the same string always yields the
same float, so updates find the level they refer to.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from flowgauge.types import Level

DEFAULT_MAX_LEVELS = 5000
"""Levels kept per side unless configured (`book_max_levels`): above the deepest venue book we subscribe
(Binance 1000 plus the levels its diffs add beyond the snapshot's edge), so only a runaway feed reaches it."""


class BookSide:
    """One side of the book. `_prices` is ascending for both sides; bids read it from the end.

    `_notional[i]` is `_prices[i] * size` kept aligned with `_prices`, so the depth within a price
    band is one C-level `sum` over a slice instead of a Python loop over every level (band depth is
    computed on every book message).

    At most `max_levels` levels are kept: when a new level would exceed it, the worst level (possibly the new
    one) is dropped and counted in `dropped`. The compiled core's `CBookSide` applies the same rule.
    """

    __slots__ = ("_descending", "_notional", "_prices", "_sizes", "dropped", "max_levels")

    def __init__(self, descending: bool, max_levels: int = DEFAULT_MAX_LEVELS) -> None:
        if max_levels < 1:
            raise ValueError("max_levels must be >= 1")
        self._descending = descending
        self.max_levels = max_levels
        self.dropped = 0
        self._sizes: dict[float, float] = {}
        self._prices: list[float] = []
        self._notional: list[float] = []

    def __len__(self) -> int:
        return len(self._prices)

    def clear(self) -> None:
        self._sizes.clear()
        self._prices.clear()
        self._notional.clear()

    def set(self, price: float, size: float) -> None:
        """Insert, update, or (size <= 0) delete the level at `price`."""
        sizes = self._sizes
        prices = self._prices
        if size > 0.0:
            index = bisect_left(prices, price)
            if price in sizes:
                self._notional[index] = price * size
            else:
                prices.insert(index, price)
                self._notional.insert(index, price * size)
                sizes[price] = size
                if len(prices) > self.max_levels:
                    self._drop_worst()
                return
            sizes[price] = size
        elif price in sizes:
            del sizes[price]
            index = bisect_left(prices, price)
            del prices[index]
            del self._notional[index]

    def _drop_worst(self) -> None:
        """Over the bound: the deepest level goes (bids keep the highest prices, asks the lowest)."""
        worst = self._prices.pop(0) if self._descending else self._prices.pop()
        if self._descending:
            del self._notional[0]
        else:
            self._notional.pop()
        del self._sizes[worst]
        self.dropped += 1

    def load(self, levels: Iterable[Level]) -> None:
        self.clear()
        sizes = self._sizes
        for price, size in levels:
            if size > 0.0:
                sizes[price] = size
        prices = sorted(sizes)
        excess = len(prices) - self.max_levels
        if excess > 0:
            # Keep the best max_levels; the rest are dropped and counted.
            kept = prices[excess:] if self._descending else prices[: self.max_levels]
            for price in set(prices).difference(kept):
                del sizes[price]
            prices = kept
            self.dropped += excess
        self._prices = prices
        self._notional = [p * sizes[p] for p in prices]

    def best(self) -> Level | None:
        if not self._prices:
            return None
        price = self._prices[-1] if self._descending else self._prices[0]
        return price, self._sizes[price]

    def top(self, n: int) -> list[Level]:
        """The best `n` levels, best first."""
        prices = self._prices
        sizes = self._sizes
        chosen = prices[: -n - 1 : -1] if self._descending else prices[:n]
        return [(p, sizes[p]) for p in chosen]

    def top_sizes(self, n: int) -> list[float]:
        """Sizes of the best `n` levels, best first (no tuples: the hot path only sums them)."""
        prices = self._prices
        sizes = self._sizes
        chosen = prices[: -n - 1 : -1] if self._descending else prices[:n]
        return [sizes[p] for p in chosen]

    def size_at(self, price: float) -> float:
        return self._sizes.get(price, 0.0)

    def notional_within(self, limit_price: float) -> float:
        """Sum of price*size over levels at or better than `limit_price` (quote notional)."""
        prices = self._prices
        if self._descending:
            return sum(self._notional[bisect_left(prices, limit_price) :])
        return sum(self._notional[: bisect_right(prices, limit_price)])

    def worst_price(self) -> float | None:
        """The deepest price the book holds on this side (how far the feed's depth reaches)."""
        if not self._prices:
            return None
        return self._prices[0] if self._descending else self._prices[-1]

    def levels(self) -> list[Level]:
        """Every level, best first."""
        return self.top(len(self._prices))


class L2Book:
    """Bids and asks of one instrument. `seq` is the venue sequence id of the current state."""

    __slots__ = ("asks", "bids", "seq", "ts_exchange")

    def __init__(self, max_levels: int = DEFAULT_MAX_LEVELS) -> None:
        self.bids = BookSide(descending=True, max_levels=max_levels)
        self.asks = BookSide(descending=False, max_levels=max_levels)
        self.seq: int | None = None
        self.ts_exchange = 0

    def load(self, bids: Iterable[Level], asks: Iterable[Level], seq: int | None, ts_exchange: int) -> None:
        self.bids.load(bids)
        self.asks.load(asks)
        self.seq = seq
        self.ts_exchange = ts_exchange

    def apply(self, bids: Iterable[Level], asks: Iterable[Level], seq: int | None, ts_exchange: int) -> None:
        bid_side = self.bids
        for price, size in bids:
            bid_side.set(price, size)
        ask_side = self.asks
        for price, size in asks:
            ask_side.set(price, size)
        self.seq = seq
        self.ts_exchange = ts_exchange

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.seq = None

    @property
    def dropped_levels(self) -> int:
        """Levels dropped on either side because the side was full (`max_levels`)."""
        return self.bids.dropped + self.asks.dropped

    def is_crossed(self) -> bool:
        """Best bid >= best ask: impossible on one matching engine, so the book is wrong."""
        best_bid = self.bids.best()
        best_ask = self.asks.best()
        return best_bid is not None and best_ask is not None and best_bid[0] >= best_ask[0]
