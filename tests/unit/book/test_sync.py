"""Book sync state machine and the Bybit continuity rule: every failure path named in metrics.md 0.2.4."""

from __future__ import annotations

from flowgauge.book.l2 import L2Book
from flowgauge.book.sync import BookSync, consecutive_ids
from flowgauge.types import BookDelta, BookSnapshot, BookState, InvalidReason


def snap(seq: int, bids=((100.0, 5.0),), asks=((100.1, 3.0),)) -> BookSnapshot:
    return BookSnapshot("bybit", "BTC/USDT:USDT", tuple(bids), tuple(asks), seq, seq, seq)


def delta(seq: int, bids=(), asks=()) -> BookDelta:
    return BookDelta("bybit", "BTC/USDT:USDT", tuple(bids), tuple(asks), seq, None, seq, seq)


def test_starts_syncing_and_ignores_deltas_before_snapshot() -> None:
    sync = BookSync(consecutive_ids)
    assert sync.state is BookState.SYNCING
    result = sync.on_delta(delta(5, bids=[(99.0, 1.0)]))
    assert not result.applied and not result.changed
    assert len(sync.book.bids) == 0


def test_snapshot_then_consecutive_deltas() -> None:
    sync = BookSync(consecutive_ids)
    result = sync.on_snapshot(snap(10))
    assert result.applied and result.changed and result.reset
    assert sync.state is BookState.VALID
    result = sync.on_delta(delta(11, bids=[(100.0, 7.0)]))
    assert result.applied and not result.changed
    assert sync.book.bids.best() == (100.0, 7.0)
    assert sync.book.seq == 11


def test_gap_invalidates_clears_and_asks_resync() -> None:
    sync = BookSync(consecutive_ids)
    sync.on_snapshot(snap(10))
    result = sync.on_delta(delta(12, bids=[(100.0, 7.0)]))
    assert not result.applied
    assert result.changed and result.needs_resync
    assert (sync.state, sync.reason) == (BookState.INVALID, InvalidReason.GAP)
    assert len(sync.book.bids) == 0 and len(sync.book.asks) == 0
    # Deltas after the gap are ignored until a fresh snapshot arrives...
    assert not sync.on_delta(delta(13)).applied
    # ...which makes the book VALID again.
    result = sync.on_snapshot(snap(20))
    assert result.applied and result.changed
    assert sync.state is BookState.VALID and sync.reason is None
    assert sync.gaps == 1 and sync.resyncs == 1


def test_duplicate_and_out_of_order_deltas_are_dropped_not_applied() -> None:
    sync = BookSync(consecutive_ids)
    sync.on_snapshot(snap(10))
    sync.on_delta(delta(11, bids=[(100.0, 7.0)]))
    duplicate = sync.on_delta(delta(11, bids=[(100.0, 99.0)]))
    older = sync.on_delta(delta(9, bids=[(100.0, 99.0)]))
    assert not duplicate.applied and not older.applied
    assert sync.state is BookState.VALID
    assert sync.book.bids.best() == (100.0, 7.0)
    assert sync.stale_dropped == 2


def test_crossed_delta_invalidates() -> None:
    sync = BookSync(consecutive_ids)
    sync.on_snapshot(snap(10))
    result = sync.on_delta(delta(11, bids=[(100.2, 1.0)]))
    assert result.needs_resync
    assert (sync.state, sync.reason) == (BookState.INVALID, InvalidReason.CROSSED)


def test_crossed_snapshot_is_invalid() -> None:
    sync = BookSync(consecutive_ids)
    result = sync.on_snapshot(snap(10, bids=[(100.1, 1.0)], asks=[(100.1, 1.0)]))
    assert not result.applied and result.needs_resync
    assert sync.reason is InvalidReason.CROSSED


def test_external_invalidation_is_idempotent() -> None:
    sync = BookSync(consecutive_ids)
    sync.on_snapshot(snap(10))
    # ApplyResult is reused between calls (no allocation per message): read it before the next call.
    first = sync.invalidate(InvalidReason.BAD_FRAME, "garbage")
    assert first.changed and first.needs_resync
    second = sync.invalidate(InvalidReason.BAD_FRAME, "garbage")
    assert not second.changed
    assert sync.resyncs == 1


def test_l2_book_levels_and_bands() -> None:
    book = L2Book()
    book.load([(100.0, 1.0), (99.0, 2.0), (98.0, 3.0)], [(101.0, 1.5), (102.0, 2.5)], 1, 0)
    assert book.bids.top(2) == [(100.0, 1.0), (99.0, 2.0)]
    assert book.asks.top(5) == [(101.0, 1.5), (102.0, 2.5)]
    book.apply([(99.0, 0.0), (99.5, 4.0)], [(101.0, 0.0)], 2, 0)
    assert book.bids.top(3) == [(100.0, 1.0), (99.5, 4.0), (98.0, 3.0)]
    assert book.asks.best() == (102.0, 2.5)
    assert book.bids.notional_within(99.5) == 100.0 * 1.0 + 99.5 * 4.0
    assert book.asks.notional_within(102.0) == 102.0 * 2.5
    assert book.bids.worst_price() == 98.0
    # Deleting a level that does not exist is harmless.
    book.apply([(42.0, 0.0)], [], 3, 0)
    assert len(book.bids) == 3


def test_stale_rest_snapshot_never_moves_a_valid_book_backwards() -> None:
    # Timeline (Binance-style, buffered): snapshot L=100 -> deltas to 102 -> a duplicate delivery of a
    # snapshot at 101 arrives late -> it is dropped and the book stays at 102 and VALID.
    from flowgauge.book.sequencing import binance_futures

    sync = BookSync(binance_futures, buffer_deltas=True)
    sync.on_snapshot(snap(100))
    first = BookDelta("bybit", "BTC/USDT:USDT", ((100.0, 6.0),), (), 101, 99, 1, 1, first_seq=99)
    assert sync.on_delta(first).applied
    assert sync.on_delta(BookDelta("bybit", "BTC/USDT:USDT", ((100.0, 8.0),), (), 102, 101, 2, 2, 102)).applied
    result = sync.on_snapshot(snap(101))
    assert not result.applied and not result.changed
    assert sync.book.seq == 102 and sync.book.bids.best() == (100.0, 8.0)
    assert sync.stale_snapshots == 1
