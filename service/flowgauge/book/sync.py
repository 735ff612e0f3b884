"""The per-instrument book sync state machine: SYNCING -> VALID -> INVALID(reason) -> VALID, and from any of
them -> RETIRED(reason), which is terminal.

Pure and synchronous. It owns one `L2Book`, applies snapshots and deltas under the venue's
sequence rule, and reports every state change. It never performs the resync itself: it says
`needs_resync` and the session asks the venue for a fresh snapshot (metrics.md 0.2.4).

Rules:
* SYNCING / INVALID: deltas are ignored until a snapshot arrives (Bybit sends one on subscribe), or,
  for venues whose snapshot comes over REST (Binance), buffered (bounded, oldest dropped and counted)
  and replayed through the sequence rule once it arrives; the rule decides which buffered delta
  bridges the snapshot.
* VALID: a delta that breaks continuity -> INVALID(GAP); a delta that crosses the book ->
  INVALID(CROSSED). Either clears the book, so nothing can be computed from a book known wrong.
* A delta older than the book (duplicate or replayed id) is dropped without harm and counted.
* A snapshot while VALID is a venue reset: the book is reloaded and `reset` tells metrics that
  no flow may be computed across it.
* A stream of full snapshots (`snapshots_only`, Hyperliquid): each push replaces the book, and its id is the
  push's exchange time. A push older than the book while VALID was sent out of order: it is dropped and
  counted (`stale_snapshots`), so a book is never published older than one already published; a run of
  `MAX_OLDER_SNAPSHOTS` older pushes in a row means the venue's clock went back, and the last one is taken.
* RETIRED (the instrument expired or was delisted): the book is cleared, and snapshots, deltas and
  invalidations are ignored from then on; nothing ever asks for a resync again. Retiring twice changes nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from flowgauge.book.l2 import L2Book
from flowgauge.types import BookDelta, BookSnapshot, BookState, InvalidReason, RetireReason

# A sequence rule answers: given the id of the current book, a delta, and whether it is the first
# delta after a snapshot, is the delta the next one (True), a stale duplicate to drop (None), or proof
# of a gap (False)? Rules live in `book.sequencing`.
SequenceRule = Callable[[int | None, BookDelta, bool], bool | None]


def consecutive_ids(last_seq: int | None, delta: BookDelta, first: bool = False) -> bool | None:
    """Bybit: `u` must be exactly previous `u + 1`; an id at or below the book's is stale."""
    if last_seq is None:
        return False
    if delta.seq == last_seq + 1:
        return True
    if delta.seq <= last_seq:
        return None
    return False


def snapshots_only(last_seq: int | None, delta: BookDelta, first: bool = False) -> bool | None:
    """Hyperliquid `l2Book`: every push is a full snapshot; a delta would be a protocol error."""
    return False


# Older pushes in a row after which a snapshot-only stream follows the venue's clock back (see the module doc).
MAX_OLDER_SNAPSHOTS = 3


class ApplyResult:
    """What one book message did. Reused per call to avoid allocation in the hot path."""

    __slots__ = ("applied", "changed", "needs_resync", "reset")

    def __init__(self) -> None:
        self.applied = False  # the message changed the book and the book is VALID
        self.reset = False  # the book was (re)loaded from a snapshot: no flow across this point
        self.changed = False  # the sync state changed (publish a status)
        self.needs_resync = False  # ask the venue for a fresh snapshot


class BookSync:
    """Book plus sync state of one (venue, instrument)."""

    __slots__ = (
        "_buffer",
        "_first",
        "_older_run",
        "_result",
        "_snapshot_stream",
        "book",
        "buffer_deltas",
        "buffer_dropped",
        "detail",
        "gaps",
        "reason",
        "resyncs",
        "rule",
        "stale_dropped",
        "stale_snapshots",
        "state",
    )

    def __init__(
        self, rule: SequenceRule, buffer_deltas: bool = False, max_buffered: int = 10_000, book: L2Book | None = None
    ) -> None:
        """`book`: the empty book to keep in sync (the compiled core passes its C-array book); a new `L2Book`
        when None."""
        self.rule = rule
        self.buffer_deltas = buffer_deltas
        self._buffer: deque[BookDelta] = deque(maxlen=max_buffered)
        self.buffer_dropped = 0
        self._first = True  # the next delta is the first after a snapshot
        self._snapshot_stream = rule is snapshots_only  # every message is a full book; its id is its time
        self._older_run = 0  # snapshots of such a stream older than the book, in a row
        self.book = book if book is not None else L2Book()
        self.state = BookState.SYNCING
        self.reason: InvalidReason | RetireReason | None = None
        self.detail = "waiting for the first snapshot"
        self.gaps = 0
        self.resyncs = 0
        self.stale_dropped = 0
        self.stale_snapshots = 0
        self._result = ApplyResult()

    @property
    def valid(self) -> bool:
        return self.state is BookState.VALID

    @property
    def retired(self) -> bool:
        return self.state is BookState.RETIRED

    def _fresh_result(self) -> ApplyResult:
        result = self._result
        result.applied = result.reset = result.changed = result.needs_resync = False
        return result

    def on_snapshot(self, snapshot: BookSnapshot) -> ApplyResult:
        result = self._fresh_result()
        if self.state is BookState.RETIRED:
            return result
        book = self.book
        if self.state is BookState.VALID and snapshot.seq is not None and book.seq is not None:
            if self.buffer_deltas and snapshot.seq <= book.seq:
                # A REST snapshot older than the live book (a duplicate delivery, or one that was in flight
                # while the book recovered): loading it would move a correct book backwards.
                self.stale_snapshots += 1
                return result
            if self._snapshot_stream and snapshot.seq < book.seq:
                # A push sent out of order: publishing it would move the book back in time. Only a run of them
                # (the venue's clock went back) is followed.
                self._older_run += 1
                if self._older_run < MAX_OLDER_SNAPSHOTS:
                    self.stale_snapshots += 1
                    return result
        self._older_run = 0
        book.load(snapshot.bids, snapshot.asks, snapshot.seq, snapshot.ts_exchange)
        self._first = True
        result.reset = True
        if self._buffer:
            buffered = list(self._buffer)
            self._buffer.clear()
            for delta in buffered:
                # Buffered deltas older than the snapshot are simply skipped (not counted as stale).
                if self._step(delta, result, "buffered {got} does not follow snapshot") is False:
                    return result
        if book.is_crossed():
            self._invalidate(InvalidReason.CROSSED, "snapshot is crossed", result)
            return result
        if self.state is not BookState.VALID or self.reason is not None:
            result.changed = True
        self.state = BookState.VALID
        self.reason = None
        self.detail = ""
        result.applied = True
        return result

    def on_delta(self, delta: BookDelta) -> ApplyResult:
        result = self._fresh_result()
        if self.state is not BookState.VALID:
            if self.buffer_deltas and self.state is not BookState.RETIRED:
                if len(self._buffer) == self._buffer.maxlen:
                    self.buffer_dropped += 1  # oldest goes; the bridge rule catches it if it mattered
                self._buffer.append(delta)
            return result
        step = self._step(delta, result, "expected after {last}, got {got}")
        if step is None:
            self.stale_dropped += 1
        elif step:
            if self.book.is_crossed():
                self._invalidate(InvalidReason.CROSSED, f"crossed after {delta.seq}", result)
            else:
                result.applied = True
        return result

    def _step(self, delta: BookDelta, result: ApplyResult, gap_detail: str) -> bool | None:
        """Apply one delta under the venue rule: True applied, None older than the book (not applied),
        False a gap (the book is invalidated, `gap_detail` formatted with `last` and `got` says why)."""
        book = self.book
        verdict = self.rule(book.seq, delta, self._first)
        if verdict is None:
            return None
        if not verdict:
            self.gaps += 1
            self._invalidate(InvalidReason.GAP, gap_detail.format(last=book.seq, got=delta.seq), result)
            return False
        book.apply(delta.bids, delta.asks, delta.seq, delta.ts_exchange)
        self._first = False
        return True

    def invalidate(self, reason: InvalidReason, detail: str) -> ApplyResult:
        """Mark the book wrong from outside (bad frame, disconnect). Idempotent while already invalid."""
        result = self._fresh_result()
        if self.state is BookState.RETIRED or (self.state is BookState.INVALID and self.reason is reason):
            return result
        self._invalidate(reason, detail, result)
        return result

    def retire(self, reason: RetireReason, detail: str) -> ApplyResult:
        """The instrument stopped trading: clear the book and stay RETIRED (terminal; no resync is ever asked).
        `changed` only on the first call."""
        result = self._fresh_result()
        if self.state is BookState.RETIRED:
            return result
        self.book.clear()
        self._buffer.clear()
        self._first = True
        self.state = BookState.RETIRED
        self.reason = reason
        self.detail = detail
        result.changed = True
        return result

    def _invalidate(self, reason: InvalidReason, detail: str, result: ApplyResult) -> None:
        self.book.clear()
        self._buffer.clear()
        self.state = BookState.INVALID
        self.reason = reason
        self.detail = detail
        self.resyncs += 1
        result.changed = True
        result.needs_resync = True
