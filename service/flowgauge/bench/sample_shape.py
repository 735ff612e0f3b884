"""Book frames shaped like cryptofeed's own sample data, so the ratios are not measured on our frames alone.

Why reconstructed: the cryptofeed 2.4.1 wheel ships no sample or test data (only the package), and the
sample recordings in its source repository are from 2021: its Bybit one uses the retired v2 API, which 2.4.1
no longer parses. What is reproduced here is the SHAPE of its Binance USD-M sample (`BINANCE_FUTURES`, a
`depth@100ms` stream of four perpetuals on one connection): the instruments' price scales and tick sizes,
their message mix, and the levels per message (from 1 to ~41, about 15 on average: thin books carry 2-5,
busy ones 12-41, roughly half of all levels deletions). Every frame is generated here from a seeded RNG;
nothing is copied. Bybit frames use the same four instruments and the same level counts in the v5 format.

Sits under `flowgauge.bench` beside `frames` and `synthetic`; writes frame texts only (no parsing, no engine).
A generator keeps its own integer-tick books, so streams never cross and ids chain: every book stays VALID.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

import orjson

from flowgauge.bench.frames import Item, RecordedFeed, RestSnapshot, load_binance_usdm, load_bybit
from flowgauge.types import ContractKind, Instrument

__all__ = ["SHAPES", "cryptofeed_shaped"]


@dataclass(frozen=True, slots=True)
class _Shape:
    venue_id: str
    base: str
    mid: float  # price the book starts around
    tick_decimals: int  # tick = 10 ** -tick_decimals
    size_decimals: int
    changes: tuple[int, int]  # updates per side and message, uniform in this range (a deletion adds a far level)
    weight: float  # share of the stream's messages


# Four perpetuals like the sample's: a sub-cent coin with thin updates, two mid books, a busy high-priced one.
SHAPES: tuple[_Shape, ...] = (
    _Shape("DENTUSDT", "DENT", 0.012341, 6, 0, (1, 2), 1.0),
    _Shape("XMRUSDT", "XMR", 352.5, 2, 3, (1, 4), 1.0),
    _Shape("KSMUSDT", "KSM", 459.0, 3, 1, (2, 9), 1.5),
    _Shape("YFIUSDT", "YFI", 49960.0, 1, 3, (4, 14), 1.5),
)
_DEPTH = 200  # levels per side in each snapshot
_TOP = 40  # updates land within this many levels of the touch
_START_MS = 1_786_000_000_000


class _Book:
    """One instrument's generator book in integer ticks (best first) and integer size units."""

    def __init__(self, shape: _Shape, rng: random.Random) -> None:
        self.shape = shape
        self.scale = 10**shape.tick_decimals
        mid = round(shape.mid * self.scale)
        self.bids = [mid - 1 - i for i in range(_DEPTH)]
        self.asks = [mid + 1 + i for i in range(_DEPTH)]
        self.sizes = {t: rng.randint(1, 50_000) for t in (*self.bids, *self.asks)}
        self.u = 335_340_000_000 + rng.randint(0, 1000)

    def price(self, tick: int) -> str:
        whole, frac = divmod(tick, self.scale)
        return f"{whole}.{frac:0{self.shape.tick_decimals}d}"

    def size(self, tick: int) -> str:
        units = self.sizes.get(tick, 0)
        d = self.shape.size_decimals
        if d == 0:
            return str(units)
        whole, frac = divmod(units, 10**d)
        return f"{whole}.{frac:0{d}d}"

    def levels(self, ticks: list[int]) -> list[list[str]]:
        return [[self.price(t), self.size(t)] for t in ticks]

    def update(self, rng: random.Random) -> tuple[list[int], list[int]]:
        """Apply one message's changes; returns the touched bid and ask ticks (absent = deleted)."""
        touched: tuple[dict[int, None], dict[int, None]] = ({}, {})
        low, high = self.shape.changes
        for side, seen, outward in ((self.bids, touched[0], -1), (self.asks, touched[1], 1)):
            for _ in range(rng.randint(low, high)):
                index = rng.randrange(min(_TOP, len(side) - 1))
                tick = side[index]
                if index > 0 and rng.random() < 0.5:
                    # A deletion; a new far level keeps the depth.
                    side.pop(index)
                    del self.sizes[tick]
                    far = side[-1] + outward
                    side.append(far)
                    self.sizes[far] = rng.randint(1, 50_000)
                    seen[far] = None
                else:
                    self.sizes[tick] = rng.randint(1, 50_000)
                seen[tick] = None
        # Now and then a new best level one tick inside the spread.
        if rng.random() < 0.15 and self.asks[0] - self.bids[0] > 2:
            is_bid = rng.random() < 0.5
            side, seen = (self.bids, touched[0]) if is_bid else (self.asks, touched[1])
            tick = side[0] + (1 if is_bid else -1)
            side.insert(0, tick)
            self.sizes[tick] = rng.randint(1, 50_000)
            seen[tick] = None
            far = side.pop()
            del self.sizes[far]
            seen[far] = None
        return list(touched[0]), list(touched[1])


def _instrument(venue: str, shape: _Shape) -> Instrument:
    return Instrument(
        venue=venue,
        symbol=f"{shape.base}/USDT:USDT",
        venue_id=shape.venue_id,
        category="linear",
        kind=ContractKind.LINEAR,
        contract_size=1.0,
        tick_size=10.0**-shape.tick_decimals,
        base=shape.base,
        quote="USDT",
        settle="USDT",
        derivative=True,
    )


def _bybit_info() -> tuple[Any, ...]:
    # The instruments-info answer cryptofeed and our loader read, one entry per shape, modelled on the
    # entry of our own recording (same keys), with the shape's symbol, coins and tick.
    body = copy.deepcopy(load_bybit().symbol_info[0])
    template = body["result"]["list"][0]
    entries = []
    for shape in SHAPES:
        entry = copy.deepcopy(template)
        entry.update(symbol=shape.venue_id, baseCoin=shape.base, quoteCoin="USDT", settleCoin="USDT")
        entry["priceFilter"]["tickSize"] = f"{10.0**-shape.tick_decimals:.{shape.tick_decimals}f}"
        entries.append(entry)
    body["result"]["list"] = entries
    return (body,)


def _binance_info() -> tuple[Any, ...]:
    info = copy.deepcopy(load_binance_usdm().symbol_info[0])
    template = info["symbols"][0]
    symbols = []
    for shape in SHAPES:
        entry = copy.deepcopy(template)
        entry.update(symbol=shape.venue_id, pair=shape.venue_id, baseAsset=shape.base)
        entry["pricePrecision"] = shape.tick_decimals
        for item in entry["filters"]:
            if item.get("filterType") == "PRICE_FILTER":
                item["tickSize"] = f"{10.0**-shape.tick_decimals:.{shape.tick_decimals}f}"
        symbols.append(entry)
    info["symbols"] = symbols
    return (info,)


def cryptofeed_shaped(venue: str, count: int, seed: int = 5) -> tuple[RecordedFeed, list[Item]]:
    """(feed description, items): a snapshot per instrument, then `count` book messages for `venue`.

    Bybit: `snapshot` frames then `delta` frames (`orderbook.200.*`). Binance USD-M: a REST depth body per
    instrument (`RestSnapshot`), then `depthUpdate` frames whose first id range contains the snapshot's
    `lastUpdateId` and whose `pu` chains each to the one before.
    """
    if venue not in ("bybit", "binanceusdm"):
        raise ValueError(f"no sample-shaped frames for {venue!r}")
    rng = random.Random(seed)
    books = [_Book(shape, rng) for shape in SHAPES]
    weights = [shape.weight for shape in SHAPES]
    now_ms = _START_MS
    items: list[Item] = []
    for book in books:
        if venue == "bybit":
            items.append(_bybit_frame(book, "snapshot", book.bids, book.asks, now_ms))
        else:
            # The snapshot sits inside the first diff's id range: U <= lastUpdateId <= u.
            body = {
                "lastUpdateId": book.u + 1,
                "E": now_ms,
                "T": now_ms,
                "bids": book.levels(book.bids),
                "asks": book.levels(book.asks),
            }
            items.append(RestSnapshot(book.shape.venue_id, orjson.dumps(body).decode()))
    for _ in range(count):
        now_ms += rng.randint(0, 3)
        book = rng.choices(books, weights)[0]
        bids, asks = book.update(rng)
        if venue == "bybit":
            items.append(_bybit_frame(book, "delta", bids, asks, now_ms))
        else:
            items.append(_binance_frame(book, bids, asks, now_ms, rng))
    instruments = tuple(_instrument(venue, shape) for shape in SHAPES)
    info = _bybit_info() if venue == "bybit" else _binance_info()
    return RecordedFeed(venue, instruments, info, (), (), _no_shift), items


def _no_shift(message: dict[str, Any], loop: int) -> None:
    return None


def _bybit_frame(book: _Book, kind: str, bids: list[int], asks: list[int], now_ms: int) -> str:
    book.u += 1
    message = {
        "topic": f"orderbook.200.{book.shape.venue_id}",
        "type": kind,
        "ts": now_ms,
        "data": {
            "s": book.shape.venue_id,
            "b": book.levels(bids),
            "a": book.levels(asks),
            "u": book.u,
            "seq": book.u * 3,
        },
        "cts": now_ms - 1,
    }
    return orjson.dumps(message).decode()


def _binance_frame(book: _Book, bids: list[int], asks: list[int], now_ms: int, rng: random.Random) -> str:
    previous = book.u
    book.u += rng.randint(1, 3000)
    data = {
        "e": "depthUpdate",
        "E": now_ms,
        "T": now_ms - 1,
        "s": book.shape.venue_id,
        "U": previous + 1,
        "u": book.u,
        "pu": previous,
        "b": book.levels(bids),
        "a": book.levels(asks),
    }
    stream = f"{book.shape.venue_id.lower()}@depth@100ms"
    return orjson.dumps({"stream": stream, "data": data}).decode()
