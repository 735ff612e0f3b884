"""Order-flow imbalance per book event: the Cont-Kukanov-Stoikov contribution `e_n` (metrics.md §1.1, §1.4).

Pure, synchronous metric math: no I/O, no asyncio, no prometheus_client, no state. The accumulator keeps the
previous top of book and sums the `e_n` this module returns into windows.

A top of book is `(bid_px, bid_sz, ask_px, ask_sz)` in quote currency / base units. An empty side is the
price `-inf` (bids) or `+inf` (asks) with size 0 (§1.4): disappearance is then a retreat that removes the old
queue, re-appearance an improvement that adds the new one, and an empty side staying empty contributes 0.
"""

from __future__ import annotations

from flowgauge.book.l2 import L2Book

__all__ = ["EMPTY_ASK_PX", "EMPTY_BID_PX", "TopOfBook", "mirror", "ofi_event", "ofi_event_ccz", "top_of_book"]

TopOfBook = tuple[float, float, float, float]
"""(best bid price, best bid size, best ask price, best ask size)."""

EMPTY_BID_PX = float("-inf")
EMPTY_ASK_PX = float("inf")


def top_of_book(book: L2Book) -> TopOfBook:
    """The book's best levels, with the §1.4 convention for an empty side."""
    bid = book.bids.best()
    ask = book.asks.best()
    bid_px, bid_sz = bid if bid is not None else (EMPTY_BID_PX, 0.0)
    ask_px, ask_sz = ask if ask is not None else (EMPTY_ASK_PX, 0.0)
    return bid_px, bid_sz, ask_px, ask_sz


def ofi_event(prev: TopOfBook, new: TopOfBook, *, retreat_takes_new_queue: bool = False) -> float:
    """CKS `e_n` from the previous and the new top of book, written as the §1.1 case table.

    Positive = buying pressure. Bid side: improvement adds the new queue, same price adds the size change,
    retreat removes the OLD queue. Ask side mirrored with the opposite sign. `retreat_takes_new_queue`
    selects the variant printed in Cont-Cucuringu-Zhang (2023) Eq. (2), which uses the NEW queue in the
    retreat branch (replication studies only; see `ofi_event_ccz`).
    """
    prev_bid_px, prev_bid_sz, prev_ask_px, prev_ask_sz = prev
    bid_px, bid_sz, ask_px, ask_sz = new

    if bid_px > prev_bid_px:
        bid_term = bid_sz
    elif bid_px == prev_bid_px:
        bid_term = bid_sz - prev_bid_sz
    else:
        bid_term = -bid_sz if retreat_takes_new_queue else -prev_bid_sz

    if ask_px < prev_ask_px:
        ask_term = -ask_sz
    elif ask_px == prev_ask_px:
        ask_term = prev_ask_sz - ask_sz
    else:
        ask_term = ask_sz if retreat_takes_new_queue else prev_ask_sz

    # Keeping the two terms separate and adding once makes mirror symmetry exact in floats:
    # the mirrored event computes (-ask_term) + (-bid_term), the exact negation of this sum.
    return bid_term + ask_term


def ofi_event_ccz(prev: TopOfBook, new: TopOfBook) -> float:
    """The variant printed in Cont-Cucuringu-Zhang (2023) Eq. (2): the worsening branch uses the NEW queue.

    For replication studies only (metrics.md §1.1 "Variant to be aware of"); the service publishes
    `ofi_event`.
    """
    return ofi_event(prev, new, retreat_takes_new_queue=True)


def mirror(top: TopOfBook) -> TopOfBook:
    """Swap the sides and negate prices: the same book seen upside down (used by the symmetry invariant)."""
    bid_px, bid_sz, ask_px, ask_sz = top
    return -ask_px, ask_sz, -bid_px, bid_sz
