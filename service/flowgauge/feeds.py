"""Glue between a venue's sans-I/O parser and the engine: the `FeedHandler` a Session drives.

One `VenueFeed` per websocket connection. It turns frames into events, hands them to the engine,
and turns the engine's resync requests into the venue's resync actions (frames to send, or REST
snapshots for the venue's `RestScheduler`), rate-limited per symbol so a book that keeps breaking
cannot start a snapshot storm. A retired book (expired or delisted) is never resynced again, not even after a
reconnect. Frames that become due outside the receive loop (a resync after a
REST snapshot failed to bridge) wait in a bounded outbox until the session's next turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from flowgauge.conflation import BacklogConflation
from flowgauge.connectors.base import Action, FetchSnapshot, VenueParser
from flowgauge.engine import Engine
from flowgauge.logs import event
from flowgauge.types import InvalidReason

log = logging.getLogger(__name__)

# At most one resync request per symbol per this interval; later requests wait for on_idle.
RESYNC_MIN_INTERVAL_NS = 1_000_000_000
# A book still not VALID this long after its last resync request (or the connect) is asked again:
# the snapshot may have been lost (failed REST answer, subscription never acknowledged).
RESYNC_RETRY_NS = 10_000_000_000
MAX_OUTBOX = 1000


class SnapshotRequester(Protocol):
    def request_snapshot(self, fetch: FetchSnapshot, callback: Callable[[str, int], None]) -> None: ...


class VenueFeed:
    """Drives `parser` and `engine` for one connection carrying `symbols` of `venue`."""

    def __init__(
        self,
        venue: str,
        symbols: Sequence[str],
        parser: VenueParser,
        engine: Engine,
        snapshots: SnapshotRequester | None = None,
        conflation: BacklogConflation | None = None,
    ) -> None:
        self.venue = venue
        self.conflation = conflation  # None: publish every book payload however far behind the loop is
        self.symbols = list(symbols)
        # The books this connection carries (Binance's /market connection carries none): what a drop
        # invalidates and what the stuck-book check watches.
        self.book_symbols = list(getattr(parser, "book_symbols", symbols))
        self.parser = parser
        self.engine = engine
        self.snapshots = snapshots
        self._last_resync: dict[str, int] = {}
        self._deferred: set[str] = set()
        self._outbox: list[str] = []
        self._snapshot_pending: set[str] = set()  # REST snapshots requested on this epoch, not delivered yet
        self.resync_requests = 0
        self.stuck_retries = 0
        self.outbox_dropped = 0
        self._epoch = 0  # bumps on every (re)connect: snapshots fetched for an older connection are stale

    # ------------------------------------------------------------------ FeedHandler

    def on_connected(self) -> list[str]:
        retire = getattr(self.parser, "retire", None)  # parsers that can leave an instrument out (Bybit, Deribit)
        if retire is not None:
            for symbol in self.symbols:
                if self.engine.is_retired(self.venue, symbol):
                    retire(symbol)
        self.parser.reset()
        self._deferred.clear()
        self._outbox.clear()
        self._snapshot_pending.clear()
        self._epoch += 1
        now = time.time_ns()
        # The subscriptions sent now count as the first resync of every book on this connection.
        self._last_resync = dict.fromkeys(self.symbols, now)
        return self._perform(self.parser.on_connected())

    def on_frame(self, raw: str | bytes, ts_recv: int) -> list[str]:
        frames: list[str] = []
        events = []
        for item in self.parser.feed(raw, ts_recv):
            if isinstance(item, str):
                frames.append(item)  # a reply the venue expects (heartbeat answers)
            else:
                events.append(item)
        conflation = self.conflation
        if conflation is None:
            resync = self.engine.handle_all(events)
        else:
            conflation.begin_frame(ts_recv)
            try:
                resync = self.engine.handle_all(events)
            finally:
                conflation.end_frame()
        for symbol in resync:
            frames += self._resync(symbol, ts_recv)
        if self._outbox:
            frames = self._outbox + frames
            self._outbox = []
        return frames

    def on_idle(self, now_ns: int) -> list[str]:
        frames: list[str] = []
        if self._outbox:
            frames, self._outbox = self._outbox, []
        for symbol in list(self._deferred):
            state = self.engine.state(self.venue, symbol)
            if state is not None and state.sync.valid:
                # Back by itself since (a snapshot the venue sent: a loop, a restart): resubscribing now would
                # only reset the flow of a correct book.
                self._deferred.discard(symbol)
                continue
            frames += self._resync(symbol, now_ns)
        for symbol in self.book_symbols:
            state = self.engine.state(self.venue, symbol)
            if state is None or state.sync.valid or symbol in self._deferred or symbol in self._snapshot_pending:
                continue  # valid, or a resync is already on its way
            if now_ns - self._last_resync.get(symbol, 0) >= RESYNC_RETRY_NS:
                self.stuck_retries += 1
                frames += self._resync(symbol, now_ns)
        return frames

    def on_disconnected(self, reason: str) -> None:
        # The next connection subscribes afresh; the venue's on_connected decides how books restart.
        # Only the books this connection carried are now unknown (Binance splits books from trades).
        # Snapshots still in flight belong to the dead connection: a book they made VALID would have
        # no stream feeding it.
        self._epoch += 1
        self._snapshot_pending.clear()
        self.engine.invalidate(self.venue, self.book_symbols, InvalidReason.RESET, f"disconnected: {reason}")

    def ping_frame(self) -> str | None:
        return self.parser.ping_frame()

    # ------------------------------------------------------------------ resync

    def _resync(self, symbol: str, now_ns: int) -> list[str]:
        if self.engine.is_retired(self.venue, symbol):
            self._deferred.discard(symbol)
            return []  # retired: nothing will ever bring this book back
        if symbol in self._snapshot_pending:
            return []  # the snapshot already requested will bring this book back
        last = self._last_resync.get(symbol)
        if last is not None and now_ns - last < RESYNC_MIN_INTERVAL_NS:
            self._deferred.add(symbol)
            return []
        self._deferred.discard(symbol)
        self._last_resync[symbol] = now_ns
        self.resync_requests += 1
        event(log, logging.INFO, "book_resync_requested", venue=self.venue, symbol=symbol)
        return self._perform(self.parser.resync(symbol))

    def _perform(self, actions: list[Action]) -> list[str]:
        frames: list[str] = []
        for action in actions:
            if isinstance(action, str):
                frames.append(action)
            elif self.snapshots is not None:
                if self.engine.is_retired(self.venue, action.symbol):
                    continue  # (a reconnect's snapshots) a retired book asks for none
                if action.symbol not in self._snapshot_pending:
                    self._snapshot_pending.add(action.symbol)
                    self.snapshots.request_snapshot(action, self._snapshot_callback(action.symbol))
            else:
                event(log, logging.ERROR, "snapshot_without_rest", venue=self.venue, symbol=action.symbol)
        return frames

    def _snapshot_callback(self, symbol: str):
        epoch = self._epoch

        def deliver(body: str, ts_recv: int) -> None:
            if epoch != self._epoch:
                return  # fetched for a connection that has since been replaced; its resync asked anew
            self._snapshot_pending.discard(symbol)
            resync = self.engine.handle_all(self.parser.on_snapshot(symbol, body, ts_recv))
            for again in resync:
                frames = self._resync(again, ts_recv)
                room = MAX_OUTBOX - len(self._outbox)
                if len(frames) > room:
                    self.outbox_dropped += len(frames) - room
                    frames = frames[:room]
                self._outbox += frames

        return deliver
