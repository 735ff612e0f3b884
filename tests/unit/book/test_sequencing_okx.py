"""`okx_books`: chained seqId/prevSeqId plus OKX's REST-snapshot bridge, alone and through BookSync."""

from __future__ import annotations

from flowgauge.book.sequencing import chained_ids, okx_books
from flowgauge.book.sync import BookSync
from flowgauge.types import BookDelta, BookSnapshot, BookState, InvalidReason


def delta(prev: int | None, seq: int, bids=((100.0, 1.0),)) -> BookDelta:
    return BookDelta("okx", "BTC/USDT:USDT", tuple(bids), (), seq, prev, seq, seq)


def snap(seq: int) -> BookSnapshot:
    return BookSnapshot("okx", "BTC/USDT:USDT", ((100.0, 5.0),), ((100.1, 3.0),), seq, seq, seq)


def test_linked_update_passes_first_or_not() -> None:
    assert okx_books(100, delta(100, 157), True) is True
    assert okx_books(100, delta(100, 157), False) is True


def test_no_book_is_a_gap() -> None:
    assert okx_books(None, delta(100, 157), True) is False


def test_stale_and_duplicate_are_dropped() -> None:
    assert okx_books(157, delta(100, 157), False) is None  # duplicate
    assert okx_books(157, delta(90, 120), False) is None  # older (out of order)
    assert okx_books(157, delta(90, 120), True) is None  # buffered before a REST snapshot


def test_bridge_only_for_the_first_update_after_a_snapshot() -> None:
    # REST snapshot at 120 sits inside the update (110, 130]: OKX's prevSeqId <= S < seqId.
    assert okx_books(120, delta(110, 130), True) is True
    assert chained_ids(120, delta(110, 130), True) is False  # why the OKX rule exists
    assert okx_books(120, delta(110, 130), False) is False  # later on, only exact links
    assert okx_books(120, delta(125, 130), True) is False  # the snapshot is older than the update's start


def test_idle_update_and_sequence_reset() -> None:
    assert okx_books(157, delta(157, 157, bids=()), False) is True  # seqId == prevSeqId: no change
    assert okx_books(157, delta(157, 3), False) is True  # ids restarted lower after maintenance
    assert okx_books(3, delta(3, 8), False) is True


def test_through_book_sync_with_buffered_deltas() -> None:
    sync = BookSync(okx_books, buffer_deltas=True)
    for d in (delta(100, 110), delta(110, 130, bids=((100.0, 2.0),)), delta(130, 140, bids=((99.0, 4.0),))):
        sync.on_delta(d)
    result = sync.on_snapshot(snap(120))
    assert result.applied and sync.state is BookState.VALID
    assert sync.book.seq == 140 and sync.book.bids.best() == (100.0, 2.0)
    gap = sync.on_delta(delta(150, 160))
    assert gap.needs_resync and sync.reason is InvalidReason.GAP


def test_buffered_update_that_cannot_bridge_is_a_gap() -> None:
    sync = BookSync(okx_books, buffer_deltas=True)
    sync.on_delta(delta(125, 130))
    result = sync.on_snapshot(snap(120))
    assert result.needs_resync and sync.state is BookState.INVALID and sync.reason is InvalidReason.GAP
