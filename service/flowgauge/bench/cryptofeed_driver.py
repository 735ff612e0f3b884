"""Drives cryptofeed's own Bybit and Binance USD-M message handlers, as a library, on our recorded frames.

Sits under `flowgauge.bench`, beside the measured flowgauge paths, as the baseline they are compared with.
cryptofeed (PyPI, the optional `bench` extra) is imported lazily here and nowhere else in `service`; nothing
outside the benchmark may import this module. Must not open a network connection: the feed's instrument
table is filled from the recorded REST answers, and the one REST call its Binance handler makes (the depth
snapshot) is answered from the recording by `_RecordedRest`.

What runs is exactly cryptofeed's `Feed.message_handler` for the venue (JSON decode with Decimal prices,
its sorted `OrderBook`, its sequence checks on Binance, `book_callback`), ending in a no-op L2 book callback,
so the figure is "frame text in, cryptofeed book updated".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from flowgauge.bench.frames import Item, RecordedFeed, RestSnapshot

__all__ = ["CryptofeedDriver", "CryptofeedMissing", "cryptofeed_version", "make_driver"]


class CryptofeedMissing(RuntimeError):
    """cryptofeed is not installed (`pip install "flowgauge[bench]"`)."""


def cryptofeed_version() -> str | None:
    """The installed cryptofeed version, or None if it is not installed."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - stdlib on 3.11
        return None
    try:
        return version("cryptofeed")
    except PackageNotFoundError:
        return None


async def _ignore_book(book: Any, receipt_timestamp: float) -> None:
    """The no-op L2 callback: cryptofeed has built the book; we take nothing from it."""
    return None


class _Conn:
    """The attributes of a cryptofeed connection its handlers read: the URL (Bybit tells linear from spot by
    it), an id for log lines, and the subscription map."""

    __slots__ = ("address", "subscription", "uuid")

    def __init__(self, address: str, subscription: dict[str, Any]) -> None:
        self.address = address
        self.uuid = "flowgauge-bench"
        self.subscription = subscription


class _RecordedRest:
    """Stands in for the feed's HTTP connection: answers a depth snapshot request with the recorded body of
    the symbol the request names (`...depth?symbol=X&...`)."""

    def __init__(self) -> None:
        self.bodies: dict[str, str] = {}
        self.reads = 0

    async def read(self, address: str, **_: Any) -> str:
        self.reads += 1
        query = address.partition("?")[2]
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        return self.bodies[params.get("symbol", "")]

    async def close(self) -> None:
        return None


class CryptofeedDriver:
    """One cryptofeed feed object fed frame texts directly (or from a websocket client, see `bench.paths`).

    Build it with `make_driver(recorded_feed)`; call `handle(item)` from inside an event loop, or `run(items)`
    to time a whole list.
    """

    def __init__(
        self, feed: Any, conn: _Conn, rest: _RecordedRest | None, std_by_venue_id: dict[str, str]
    ) -> None:
        self.feed = feed
        self.conn = conn
        self._rest = rest
        self._std = std_by_venue_id
        self._handler = feed.message_handler

    async def handle(self, item: Item) -> None:
        """Feed one websocket frame text (or install a REST snapshot for the next depth frame)."""
        if isinstance(item, RestSnapshot):
            self._install_snapshot(item)
            return
        await self._handler(item, self.conn, time.time())

    def _install_snapshot(self, item: RestSnapshot) -> None:
        # cryptofeed fetches the snapshot itself when a depth frame arrives for a pair without a book:
        # drop the book and let its own `_snapshot` read this body through `_RecordedRest`.
        if self._rest is None:
            raise ValueError("this venue takes no REST snapshots")
        self._rest.bodies[item.venue_id] = item.body
        self.feed._l2_book.pop(self._std[item.venue_id], None)

    async def _drive(self, items: Iterable[Item]) -> float:
        handle = self._handler
        conn = self.conn
        clock = time.time
        started = time.perf_counter()
        for item in items:
            if isinstance(item, RestSnapshot):
                self._install_snapshot(item)
            else:
                await handle(item, conn, clock())
        return time.perf_counter() - started

    def run(self, items: list[Item], loop_factory: Any = None) -> float:
        """Feed every item in order inside a fresh event loop; returns the seconds spent in the handlers."""
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(self._drive(items))

    @property
    def rest_reads(self) -> int:
        return self._rest.reads if self._rest is not None else 0


def make_driver(recorded: RecordedFeed) -> CryptofeedDriver:
    """A fresh cryptofeed feed for the venue of `recorded`, subscribed to L2 books of its instruments.

    Raises:
        CryptofeedMissing: cryptofeed is not installed.
        ValueError: the venue has no cryptofeed driver here.
    """
    try:
        from cryptofeed.defines import L2_BOOK
        from cryptofeed.symbols import Symbols
    except ImportError as exc:
        raise CryptofeedMissing('cryptofeed is not installed: pip install "flowgauge[bench]"') from exc
    venue_ids = [i.venue_id for i in recorded.instruments]
    if recorded.venue == "bybit":
        from cryptofeed.exchanges.bybit import Bybit

        # Bybit's parser takes the list of REST answers (one per category route).
        mapping, info = Bybit._parse_symbol_data(list(recorded.symbol_info))
        Symbols.set(Bybit.id, mapping, info)
        std = _std_symbols(mapping, venue_ids)
        feed = Bybit(symbols=list(std.values()), channels=[L2_BOOK], callbacks={L2_BOOK: _ignore_book})
        conn = _Conn("wss://stream.bybit.com/v5/public/linear", dict(feed.subscription))
        return CryptofeedDriver(feed, conn, None, std)
    if recorded.venue == "binanceusdm":
        from cryptofeed.exchanges.binance_futures import BinanceFutures

        mapping, info = BinanceFutures._parse_symbol_data(recorded.symbol_info[0])
        Symbols.set(BinanceFutures.id, mapping, info)
        std = _std_symbols(mapping, venue_ids)
        feed = BinanceFutures(
            symbols=list(std.values()), channels=[L2_BOOK], callbacks={L2_BOOK: _ignore_book}
        )
        rest = _RecordedRest()
        feed.http_conn = rest
        conn = _Conn("wss://fstream.binance.com/stream", dict(feed.subscription))
        return CryptofeedDriver(feed, conn, rest, std)
    raise ValueError(f"no cryptofeed driver for venue {recorded.venue!r}")


def _std_symbols(mapping: dict[str, str], venue_ids: list[str]) -> dict[str, str]:
    """venue id -> cryptofeed's normalized symbol, for the instruments we replay."""
    by_venue_id = {v: k for k, v in mapping.items()}
    missing = [v for v in venue_ids if v not in by_venue_id]
    if missing:
        raise ValueError(f"cryptofeed's symbol table has no {', '.join(missing)}")
    return {v: by_venue_id[v] for v in venue_ids}
