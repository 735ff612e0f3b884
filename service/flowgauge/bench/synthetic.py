"""A synthetic, deterministic Bybit-format book stream for N instruments (`orderbook.200.<id>` frames).

Sits under `flowgauge.bench`: the recorded samples hold two instruments, so the many-instrument figures
(latency at 5k msgs/s over 100 instruments, memory with 500 books, the two-process scale-out) run on this.
Must not import the engine or the parsers: it only writes frame texts, which the measured paths parse.

Each instrument gets a `snapshot` of `levels` levels per side, then `delta`s shaped like the recorded ones
(median 5 changed levels): size changes near the top, a level deleted and one added deeper, and now and
then the touch moving by a tick. The generator keeps its own book in integer ticks, so the stream is never
crossed and every `u` follows the previous one: a correct book never goes INVALID on it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import orjson

from flowgauge.types import ContractKind, Instrument

__all__ = ["RECORDED_CHANGES_PER_SIDE", "SyntheticStream", "synthetic_instruments"]

_TICKS_PER_UNIT = 10  # tick size 0.1: prices are rendered from integer ticks, so each string is exact
_TOP = 20  # changes land within this many levels of the touch, like real flow
# With this bound a delta carries about as many levels as the Bybit recording's book frames (~14.4 vs 14.3;
# repeated ticks within the top 20 merge, so the bound is above the target).
RECORDED_CHANGES_PER_SIDE = 16


def synthetic_instruments(n: int) -> list[Instrument]:
    """`n` linear USDT perpetuals `SYN0000USDT`... on venue "bybit" (tick 0.1)."""
    return [
        Instrument(
            venue="bybit",
            symbol=f"SYN{i:04d}/USDT:USDT",
            venue_id=f"SYN{i:04d}USDT",
            category="linear",
            kind=ContractKind.LINEAR,
            contract_size=1.0,
            tick_size=1.0 / _TICKS_PER_UNIT,
            base=f"SYN{i:04d}",
            quote="USDT",
            settle="USDT",
            derivative=True,
        )
        for i in range(n)
    ]


def _price(ticks: int) -> str:
    return f"{ticks // _TICKS_PER_UNIT}.{ticks % _TICKS_PER_UNIT}"


class _Book:
    """The generator's own book of one instrument: sorted tick lists (best first) and sizes."""

    __slots__ = ("asks", "bids", "sizes", "topic", "u", "venue_id")

    def __init__(self, venue_id: str, depth: int, mid: int, rng: random.Random) -> None:
        self.venue_id = venue_id
        self.topic = f"orderbook.{200 if depth <= 200 else 1000}.{venue_id}"
        self.bids = [mid - 1 - i for i in range(depth)]  # descending
        self.asks = [mid + 1 + i for i in range(depth)]  # ascending
        self.sizes: dict[int, int] = {t: rng.randint(1, 5000) for t in (*self.bids, *self.asks)}
        self.u = 1000 + rng.randint(0, 1000)

    def level(self, tick: int) -> list[str]:
        size = self.sizes.get(tick, 0)
        return [_price(tick), f"{size // 1000}.{size % 1000:03d}"]


class SyntheticStream:
    """Deterministic frames for `n` instruments; the same arguments always give the same texts.

    Args:
        n: number of instruments (`synthetic_instruments(n)`).
        levels: levels per side in each snapshot (and kept in the book, give or take one).
        seed: RNG seed.
        start_ms: exchange time of the first frame; each delta advances time by `step_us` microseconds.
        changes_per_side: at most this many size changes per side in a delta (uniform from 1). The default 3
            gives ~4.8 levels per frame; `RECORDED_CHANGES_PER_SIDE` gives the recordings' ~14.
    """

    def __init__(
        self,
        n: int,
        levels: int = 200,
        seed: int = 7,
        start_ms: int = 1_786_000_000_000,
        step_us: int = 200,
        changes_per_side: int = 3,
    ) -> None:
        if n < 1 or levels < 2:
            raise ValueError("need at least one instrument and two levels per side")
        self.instruments = synthetic_instruments(n)
        self.levels = levels
        self._rng = random.Random(seed)
        self._books = [
            _Book(i.venue_id, levels, self._rng.randint(1_000, 500_000) * _TICKS_PER_UNIT, self._rng)
            for i in self.instruments
        ]
        self._now_us = start_ms * 1000
        self._step_us = step_us
        self._changes = max(1, changes_per_side)

    def snapshots(self) -> list[str]:
        """One `snapshot` frame per instrument (the current state of the generator's books)."""
        return [self._snapshot(book) for book in self._books]

    def snapshot(self, index: int) -> str:
        return self._snapshot(self._books[index])

    def deltas(self, count: int, instruments: range | None = None) -> list[str]:
        """`count` delta frames, instruments drawn uniformly from `instruments` (default: all)."""
        return list(self.iter_deltas(count, instruments))

    def iter_deltas(self, count: int, instruments: range | None = None) -> Iterator[str]:
        for _, text in self.iter_indexed_deltas(count, instruments):
            yield text

    def indexed_deltas(self, count: int) -> list[tuple[int, str]]:
        """`count` (instrument index, delta frame) pairs: lets a shard keep its own instruments' frames."""
        return list(self.iter_indexed_deltas(count))

    def iter_indexed_deltas(self, count: int, instruments: range | None = None) -> Iterator[tuple[int, str]]:
        pool = instruments if instruments is not None else range(len(self._books))
        rng = self._rng
        for _ in range(count):
            index = pool[rng.randrange(len(pool))]
            yield index, self._delta(self._books[index])

    # -------------------------------------------------------------------------------------- frames

    def _frame(self, book: _Book, kind: str, bids: list[list[str]], asks: list[list[str]]) -> str:
        self._now_us += self._step_us
        ts = self._now_us // 1000
        message = {
            "topic": book.topic,
            "type": kind,
            "ts": ts,
            "data": {"s": book.venue_id, "b": bids, "a": asks, "u": book.u, "seq": book.u * 7},
            "cts": ts - 1,
        }
        return orjson.dumps(message).decode()

    def _snapshot(self, book: _Book) -> str:
        book.u += 1
        return self._frame(
            book, "snapshot", [book.level(t) for t in book.bids], [book.level(t) for t in book.asks]
        )

    def _delta(self, book: _Book) -> str:
        rng = self._rng
        changed: dict[int, bool] = {}  # tick touched -> is a bid; a tick absent from sizes is sent as size 0
        sizes = book.sizes
        # 1..changes_per_side size changes per side near the touch.
        for side, is_bid in ((book.bids, True), (book.asks, False)):
            for _ in range(rng.randint(1, self._changes)):
                tick = side[rng.randrange(min(_TOP, len(side)))]
                sizes[tick] = rng.randint(1, 5000)
                changed[tick] = is_bid
        # Sometimes a level near the top empties and a new one appears at the far end (depth stays put).
        if rng.random() < 0.3:
            is_bid = rng.random() < 0.5
            side = book.bids if is_bid else book.asks
            if len(side) > 2:
                tick = side.pop(rng.randrange(1, min(_TOP, len(side))))
                del sizes[tick]
                changed[tick] = is_bid
                far = side[-1] - 1 if is_bid else side[-1] + 1
                side.append(far)
                sizes[far] = rng.randint(1, 5000)
                changed[far] = is_bid
        # Sometimes the touch moves by one tick: improve into the spread, or take the best level away.
        if rng.random() < 0.2:
            self._move_touch(book, changed)
        bids = [book.level(tick) for tick, is_bid in changed.items() if is_bid]
        asks = [book.level(tick) for tick, is_bid in changed.items() if not is_bid]
        book.u += 1
        return self._frame(book, "delta", bids, asks)

    def _move_touch(self, book: _Book, changed: dict[int, bool]) -> None:
        rng = self._rng
        sizes = book.sizes
        bid_side = rng.random() < 0.5
        spread = book.asks[0] - book.bids[0]
        if spread > 1 and rng.random() < 0.6:
            # Improve: a new best level one tick inside the spread.
            side = book.bids if bid_side else book.asks
            tick = side[0] + 1 if bid_side else side[0] - 1
            side.insert(0, tick)
            sizes[tick] = rng.randint(1, 5000)
            changed[tick] = bid_side
            # Keep the depth constant: the far level goes.
            far = side.pop()
            del sizes[far]
            changed[far] = bid_side
        else:
            # Take the best level away; a new far level keeps the depth.
            side = book.bids if bid_side else book.asks
            tick = side.pop(0)
            del sizes[tick]
            changed[tick] = bid_side
            far = side[-1] - 1 if bid_side else side[-1] + 1
            side.append(far)
            sizes[far] = rng.randint(1, 5000)
            changed[far] = bid_side
