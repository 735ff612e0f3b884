"""Per-venue book continuity rules (pure). Each is a `SequenceRule`: (book id, delta, first) -> verdict.

Verdicts: True = the delta is the next one, apply it; None = older than the book (duplicate or
replayed), drop it harmlessly; False = something was missed, the book is wrong (GAP).
"""

from __future__ import annotations

from flowgauge.book.sync import consecutive_ids, snapshots_only
from flowgauge.types import BookDelta

__all__ = ["binance_futures", "chained_ids", "consecutive_ids", "okx_books", "snapshots_only"]


def chained_ids(last_seq: int | None, delta: BookDelta, first: bool = False) -> bool | None:
    """OKX (`prevSeqId == previous seqId`) and Deribit (`prev_change_id == previous change_id`).

    Ids jump (Deribit 33195894164 -> 33195894355), so only the explicit link counts, never `+1`.
    OKX may send a delta whose seqId equals prevSeqId (no change, a heartbeat-like update): applying
    it is harmless, so it passes.
    """
    if last_seq is None:
        return False
    if delta.prev_seq == last_seq:
        return True
    if delta.seq <= last_seq:
        return None
    return False


def binance_futures(last_seq: int | None, delta: BookDelta, first: bool = False) -> bool | None:
    """Binance USD-M / COIN-M futures local book rule (exchanges.md "Differences that bite" 1).

    After the REST snapshot (`lastUpdateId` = L): drop events with `u < L`; the first applied event
    must have `U <= L <= u` (an event with `u == L` exactly is the right first one, which the spot rule
    would wrongly drop); after that each event's `pu` must equal the previous event's `u`.
    """
    if last_seq is None:
        return False
    if first:
        if delta.seq < last_seq:
            return None
        first_id = delta.first_seq if delta.first_seq is not None else delta.seq
        return first_id <= last_seq <= delta.seq
    return chained_ids(last_seq, delta)


def okx_books(last_seq: int | None, delta: BookDelta, first: bool = False) -> bool | None:
    """OKX `books`: `chained_ids`, plus OKX's bridge for the first delta after a REST snapshot.

    A REST snapshot (`/api/v5/market/books`, the bootstrap OKX documents for when the WS snapshot is
    gone) is taken at any seqId S, not necessarily one a WS update ended on. OKX's procedure: drop
    buffered updates with `seqId <= S`; the first one applied must have `prevSeqId <= S < seqId`
    (its levels are absolute sizes, so applying it over a slightly newer book is exact). After a WS
    snapshot the first update has `prevSeqId == S`, which the bridge also accepts. After that, each
    update must link exactly (`prevSeqId == previous seqId`); that includes OKX's idle update with
    `seqId == prevSeqId` and a post-maintenance reset where `seqId < prevSeqId`.
    """
    if last_seq is None:
        return False
    if delta.prev_seq == last_seq:
        return True
    if delta.seq <= last_seq:
        return None
    return first and delta.prev_seq is not None and delta.prev_seq <= last_seq
