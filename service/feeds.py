"""Glue between a venue's sans-I/O parser and the engine: the `FeedHandler` a Session drives.

One `VenueFeed` per websocket connection. It turns frames into events, hands them to the engine,
and turns the engine's resync requests into the venue's resync frames, rate-limited per symbol
so a book that keeps breaking cannot start a snapshot storm.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from service.engine import Engine
from service.logs import event
from service.types import Event, InvalidReason

log = logging.getLogger(__name__)

# At most one resync request per symbol per this interval; later requests wait for on_idle.
RESYNC_MIN_INTERVAL_NS = 1_000_000_000


class VenueParser(Protocol):
    def subscribe_frames(self, batch: int = 10) -> list[str]: ...
    def resync_frames(self, symbol: str) -> list[str]: ...
    def ping_frame(self) -> str | None: ...
    def feed(self, raw: str | bytes, ts_recv: int) -> list[Event]: ...
    def reset(self) -> None: ...


class VenueFeed:
    """Drives `parser` and `engine` for one connection carrying `symbols` of `venue`."""

    def __init__(
        self, venue: str, symbols: Sequence[str], parser: VenueParser, engine: Engine, subscribe_batch: int
    ) -> None:
        self.venue = venue
        self.symbols = list(symbols)
        self.parser = parser
        self.engine = engine
        self.subscribe_batch = subscribe_batch
        self._last_resync: dict[str, int] = {}
        self._deferred: set[str] = set()
        self.resync_requests = 0

    def on_connected(self) -> list[str]:
        self.parser.reset()
        self._deferred.clear()
        self._last_resync.clear()
        return self.parser.subscribe_frames(self.subscribe_batch)

    def on_frame(self, raw: str | bytes, ts_recv: int) -> list[str]:
        resync = self.engine.handle_all(self.parser.feed(raw, ts_recv))
        if not resync:
            return []
        frames: list[str] = []
        for symbol in resync:
            frames += self._resync(symbol, ts_recv)
        return frames

    def on_idle(self, now_ns: int) -> list[str]:
        if not self._deferred:
            return []
        frames: list[str] = []
        for symbol in list(self._deferred):
            frames += self._resync(symbol, now_ns)
        return frames

    def on_disconnected(self, reason: str) -> None:
        # The next connection subscribes afresh and gets new snapshots; no resync frames needed.
        self.engine.invalidate(self.venue, self.symbols, InvalidReason.RESET, f"disconnected: {reason}")

    def ping_frame(self) -> str | None:
        return self.parser.ping_frame()

    def _resync(self, symbol: str, now_ns: int) -> list[str]:
        last = self._last_resync.get(symbol)
        if last is not None and now_ns - last < RESYNC_MIN_INTERVAL_NS:
            self._deferred.add(symbol)
            return []
        self._deferred.discard(symbol)
        self._last_resync[symbol] = now_ns
        self.resync_requests += 1
        event(log, logging.INFO, "book_resync_requested", venue=self.venue, symbol=symbol)
        return self.parser.resync_frames(symbol)
