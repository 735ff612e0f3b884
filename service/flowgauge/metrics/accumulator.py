"""The per-instrument metric accumulator the engine feeds with every event of one (venue, instrument).

Pure, synchronous metric math: no I/O, no asyncio, no sockets, no prometheus_client. The engine owns the book,
its sync state machine and the publishing; this class owns the flow state (previous top of book, windows,
decayed sums, trade flow, OI history, funding) and turns it into the metric part of the published payload.

Time is exchange time in integer nanoseconds. Every window, decayed sum and window-derived flag of a payload is
evaluated at that payload's own exchange time t, over (t - T, t] (metrics.md §0.2.3). Venue streams are not
mutually ordered (a trade may carry a later timestamp than the book message after it), so an event from
another stream with a time after t is held back: it counts from the first payload at or after its time. The
window primitives (`metrics.windows`) answer any t within a late horizon of the newest time seen; how they
bound memory beyond it, and treat exchange time that steps back within one stream, is documented there.

Validity (metrics.md §0.2.4, §1.4): after `on_book_invalid` the next `on_book` is the first state after the
(re)sync. It yields no `e_n` (the transition across the gap is not an event), and flow windows that overlap
the invalid period keep the GAP (reason GAP) or RESET (any other reason) flag until they have slid past the
resync time. Window contents from before the gap stay: they are real flow, published with that flag.
"""

from __future__ import annotations

from flowgauge.book.l2 import L2Book
from flowgauge.metrics.depth import band_depth, depth_imbalances, spread_bps, weighted_mid
from flowgauge.metrics.extended import ExtendedMetrics
from flowgauge.metrics.funding import FundingState, premium_bps
from flowgauge.metrics.ofi import EMPTY_ASK_PX, EMPTY_BID_PX, TopOfBook, ofi_event, top_of_book
from flowgauge.metrics.open_interest import OpenInterestFlow
from flowgauge.metrics.trades import TradeFlowImbalance
from flowgauge.metrics.windows import DecayedSum, SlidingSum
from flowgauge.types import (
    BestQuote,
    FundingRate,
    Instrument,
    InvalidReason,
    Liquidation,
    LongShortRatio,
    OpenInterest,
    Trade,
)

__all__ = ["FIELD_NAMES", "QUALITY_FLAGS", "InstrumentMetrics"]

_S = 1_000_000_000

FIELD_NAMES: tuple[str, ...] = (
    "bid_px", "bid_sz", "ask_px", "ask_sz", "mid", "spread_bps", "wmid",
    "depth_imb_1", "depth_imb_5", "depth_imb_10", "depth_imb_20",
    "depth_bid_10bps", "depth_ask_10bps", "depth_bid_25bps", "depth_ask_25bps",
    "ofi", "ofi_raw_1s", "ofi_raw_10s", "ofi_raw_60s", "ofi_ew_10s",
    "tfi_10s", "tfi_60s",
    "oi", "oi_notional", "oi_chg_pct_5m", "oi_open_ratio_5m",
    "funding_rate_8h", "premium_bps_live", "mark_price", "index_price",
    "ls_skew_accounts", "ls_skew_top_positions",
    "quality", "coverage",
)  # fmt: skip
"""The keys of `InstrumentMetrics.fields`, in publication order."""

QUALITY_FLAGS = frozenset(
    {"WARMUP", "GAP", "RESET", "PARTIAL_WINDOW", "EMPTY_SIDE", "OI_INCONSISTENT", "STALE", "SAMPLED_INPUT"}
)

# Long/short ratio kinds (LongShortRatio.kind) -> payload field (metrics.md 6.4).
LONG_SHORT_FIELDS = {"accounts": "ls_skew_accounts", "top_positions": "ls_skew_top_positions"}

DEPTH_LEVELS = (1, 5, 10, 20)
_DEPTH_KEYS = ("depth_imb_1", "depth_imb_5", "depth_imb_10", "depth_imb_20")
BANDS_BPS = (10.0, 25.0)
_BAND_KEYS = (("depth_bid_10bps", "depth_ask_10bps"), ("depth_bid_25bps", "depth_ask_25bps"))

WARMUP_NS = 60 * _S  # the longest flow window: until it has filled, flow values cover less than they say

# Coverage (issue 11 item 2): a non-null windowed value whose window reaches back before what this instrument has
# observed is marked `coverage[field] = "PARTIAL"` (and the payload PARTIAL_WINDOW); a band the visible book does
# not reach on a non-empty side is `"EXHAUSTED"` (its depth is a lower bound; PARTIAL_WINDOW too, as before).
# OFI windows count from the (re)sync's first state, trade windows from the first input the accumulator saw.
OFI_COVERAGE = (("ofi_raw_1s", 1 * _S), ("ofi_raw_10s", 10 * _S), ("ofi_raw_60s", 60 * _S))
TFI_COVERAGE = (("tfi_10s", 10 * _S), ("tfi_60s", 60 * _S))
PARTIAL = "PARTIAL"
EXHAUSTED = "EXHAUSTED"
FLAG_HORIZON_NS = 60 * _S  # GAP / RESET stay until the longest flow window no longer overlaps the gap
OI_WINDOW_NS = 5 * 60 * _S


class InstrumentMetrics:
    """Flow and state metrics of one instrument, fed event by event, read with `fields`.

    Call order contract (the engine's): `on_book` after every applied book message while the book is VALID;
    `on_book_invalid` when it leaves VALID; the other `on_*` for their events whatever the book state.
    """

    __slots__ = (
        "_ew_10s",
        "_first_book_seen",
        "_flag_until",
        "_funding",
        "_last_e",
        "_oi",
        "_open_flags",
        "_prev_top",
        "_since",
        "_tfi_10s",
        "_tfi_60s",
        "_warm_start",
        "_win_1s",
        "_win_10s",
        "_win_60s",
        "book_events",
        "extended",
        "instrument",
        "last_liquidation",
        "liq_count_long",
        "liq_count_short",
        "liq_size_long",
        "liq_size_short",
        "ls_skew",
    )

    def __init__(self, instrument: Instrument, extended: ExtendedMetrics | None = None) -> None:
        self.instrument = instrument
        # The selected per-book-event families beyond core (metrics.extended); None: core only.
        self.extended = extended
        self._prev_top: TopOfBook | None = None  # state n-1; None at start and after invalidation
        self._last_e: float | None = None  # e_n of the latest book event
        self._first_book_seen = False
        self._warm_start: int | None = None  # ts of the first (post-resync) book state
        self._since: int | None = None  # ts of the first input of any kind: trade windows are covered from it
        self._open_flags: set[str] = set()  # GAP / RESET of an invalid period not yet resynced
        self._flag_until: dict[str, int] = {}  # flag -> time from which no flow window overlaps its gap
        self._win_1s = SlidingSum(1 * _S)
        self._win_10s = SlidingSum(10 * _S)
        self._win_60s = SlidingSum(60 * _S)
        self._ew_10s = DecayedSum.for_window(10.0)
        self._tfi_10s = TradeFlowImbalance(10 * _S)
        self._tfi_60s = TradeFlowImbalance(60 * _S)
        self._oi = OpenInterestFlow(OI_WINDOW_NS)
        self._funding = FundingState()
        self.book_events = 0  # book events that produced an e_n
        self.last_liquidation: Liquidation | None = None
        self.liq_count_long = 0
        self.liq_count_short = 0
        self.liq_size_long = 0.0
        self.liq_size_short = 0.0
        self.ls_skew: dict[str, float] = {}  # payload field -> latest (R - 1) / (R + 1)

    @property
    def last_e(self) -> float | None:
        """`e_n` of the latest book event; None for a first state (start, or after a resync)."""
        return self._last_e

    # -- inputs ---------------------------------------------------------------------------------------------

    def on_book(self, book: L2Book, ts_exchange: int) -> None:
        """A book message was applied to a VALID book: compute this event's `e_n` and add it to the flows."""
        e = self._book_event(book, ts_exchange)
        self._first_book_seen = True
        if self.extended is not None:
            self.extended.on_book(book, ts_exchange)
        if e is None:
            self._first_state(ts_exchange)
            return
        self._last_e = e
        self.book_events += 1

    def _first_state(self, ts_exchange: int) -> None:
        """First state after start or after a resync: stored as state n-1, no e_n (§1.4)."""
        self._last_e = None
        self._warm_start = ts_exchange
        if self._since is None:
            self._since = ts_exchange
        if self._open_flags:
            until = ts_exchange + FLAG_HORIZON_NS
            flag_until = self._flag_until
            for flag in self._open_flags:
                if flag_until.get(flag, 0) < until:
                    flag_until[flag] = until
            self._open_flags.clear()

    def _book_event(self, book: L2Book, ts_exchange: int) -> float | None:
        """Store the book's top as state n and add its `e_n` to the OFI windows; returns `e_n`, or None when
        there is no state n-1 (the compiled core overrides this with one C call doing the same)."""
        top = top_of_book(book)
        prev = self._prev_top
        self._prev_top = top
        if prev is None:
            return None
        e = ofi_event(prev, top)
        if e != 0.0:
            # A zero adds nothing to a sum; skipping it keeps the deques short on depth-only updates.
            self._win_1s.add(ts_exchange, e)
            self._win_10s.add(ts_exchange, e)
            self._win_60s.add(ts_exchange, e)
            self._ew_10s.add(ts_exchange, e)
        return e

    def on_book_invalid(self, ts_exchange: int, reason: InvalidReason) -> None:
        """The book left VALID: forget state n-1 and open a GAP / RESET period."""
        self._prev_top = None
        self._last_e = None
        self._warm_start = None
        self._open_flags.add("GAP" if reason is InvalidReason.GAP else "RESET")
        if self.extended is not None:
            self.extended.on_book_invalid(ts_exchange)
            if reason is InvalidReason.RESET:  # a reconnect or reload: the trade feed may have lost prints too
                self.extended.on_feed_reset(ts_exchange)

    def on_best_quote(self, quote: BestQuote) -> None:
        """A state of the venue's best-quote stream: L1 accumulators only (family ofi_l1, metrics.ofi_l1), never
        the book, no payload. An empty side takes the metrics.md 1.4 convention (price -inf / +inf, size 0)."""
        extended = self.extended
        if extended is None:
            return
        bid_px, ask_px = quote.bid_px, quote.ask_px
        extended.on_best_quote(
            EMPTY_BID_PX if bid_px is None else bid_px,
            0.0 if bid_px is None else (quote.bid_sz or 0.0),
            EMPTY_ASK_PX if ask_px is None else ask_px,
            0.0 if ask_px is None else (quote.ask_sz or 0.0),
            quote.ts_exchange,
            -1 if quote.seq is None else quote.seq,
            quote.reset,
        )

    def on_trade(self, trade: Trade) -> None:
        if self._since is None:
            self._since = trade.ts_exchange
        # Every print counts in the volume OI is checked against (§6.2); forced ones stay out of TFI (§5.1).
        self._oi.on_trade(trade.ts_exchange, trade.size)
        if not trade.forced:
            self._tfi_10s.add(trade.ts_exchange, trade.side, trade.size)
            self._tfi_60s.add(trade.ts_exchange, trade.side, trade.size)
        if self.extended is not None:  # slow families (trade_flow, positioning): metrics.extended
            self.extended.on_trade(trade)

    def on_open_interest(self, oi: OpenInterest) -> None:
        if self._since is None:
            self._since = oi.ts_exchange
        self._oi.on_open_interest(oi.ts_exchange, oi.open_interest)
        if self.extended is not None:
            self.extended.on_open_interest(oi)

    def on_funding(self, funding: FundingRate) -> None:
        """Funding / mark / index update; None fields mean "unchanged"."""
        if self._since is None:
            self._since = funding.ts_exchange
        self._funding.update(funding)
        if self.extended is not None:
            self.extended.on_funding(funding)

    def on_liquidation(self, liq: Liquidation) -> None:
        """Keep the last liquidation and per-side totals (the liquidation windows of §6.5: family positioning)."""
        if self._since is None:
            self._since = liq.ts_exchange
        if self.extended is not None:
            self.extended.on_liquidation(liq)
        self.last_liquidation = liq
        if liq.liquidated_side == "long":
            self.liq_count_long += 1
            self.liq_size_long += liq.size
        else:
            self.liq_count_short += 1
            self.liq_size_short += liq.size

    def on_long_short(self, ratio: LongShortRatio) -> None:
        """Venue long/short statistic (5-minute data): ls_skew = (R - 1)/(R + 1) = long share - short share."""
        if self._since is None:
            self._since = ratio.ts_exchange
        if self.extended is not None:
            self.extended.on_long_short(ratio)
        key = LONG_SHORT_FIELDS.get(ratio.kind)
        if key is None or not ratio.ratio >= 0.0:  # unknown kind, negative or NaN ratio: not a skew
            return
        self.ls_skew[key] = (ratio.ratio - 1.0) / (ratio.ratio + 1.0)

    # -- output ---------------------------------------------------------------------------------------------

    def fields(
        self, book: L2Book | None, ts_exchange: int, trigger: str, out: dict[str, object] | None = None
    ) -> dict[str, object]:
        """The metric part of one payload, every window evaluated at the payload's own time `ts_exchange`.

        Args:
            book: the current book if it is VALID, else None (then every book-state metric is None).
            ts_exchange: exchange time of the payload: of the event that triggered it, or for a book payload
                the time of the book state (the last message applied).
            trigger: what triggered it ("book", "trade", ...); `ofi` is only set for "book".
            out: a dict to fill (the engine passes the payload with its envelope already in it, so each
                payload is built once); a new one when None.

        Returns:
            `out` with exactly the keys of `FIELD_NAMES` added; undefined values are None, `quality` is a
            sorted list of flag names, `coverage` a dict (field -> PARTIAL / EXHAUSTED, empty when all is covered).
        """
        now = ts_exchange
        flags: set[str] = set()
        coverage: dict[str, str] = {}
        if out is None:
            out = {}
        mid = self._flow_fields(book, now, trigger, out, flags, coverage)
        self._window_coverage(now, out, coverage)

        oi = self._oi
        funding = self._funding
        mark = funding.mark_price
        out["oi"] = oi.oi
        out["oi_notional"] = oi.oi * mark if oi.oi is not None and mark is not None else None
        out["oi_chg_pct_5m"] = oi.chg_pct
        out["oi_open_ratio_5m"] = oi.open_ratio
        if oi.partial and oi.open_ratio is not None:
            coverage["oi_open_ratio_5m"] = PARTIAL
        if coverage:
            flags.add("PARTIAL_WINDOW")
        if oi.inconsistent:
            flags.add("OI_INCONSISTENT")
        if oi.stale:
            flags.add("STALE")

        out["funding_rate_8h"] = funding.rate_8h()
        out["premium_bps_live"] = premium_bps(mid, funding.index_price)
        out["mark_price"] = mark
        out["index_price"] = funding.index_price
        out["ls_skew_accounts"] = self.ls_skew.get("ls_skew_accounts")
        out["ls_skew_top_positions"] = self.ls_skew.get("ls_skew_top_positions")

        warm_start = self._warm_start
        if warm_start is None or now - warm_start < WARMUP_NS:
            flags.add("WARMUP")
        if self._open_flags:
            flags.update(self._open_flags)
        for flag, until in self._flag_until.items():
            if now < until:
                flags.add(flag)
        out["quality"] = sorted(flags)
        out["coverage"] = coverage
        if self.extended is not None:
            self.extended.fill(book, out, now)
        return out

    def _window_coverage(self, now: int, out: dict[str, object], coverage: dict[str, str]) -> None:
        """Mark the non-null OFI / TFI windows that reach back before what was observed (see OFI_COVERAGE)."""
        start = self._warm_start
        for key, window in OFI_COVERAGE:
            if out[key] is not None and (start is None or now - start < window):
                coverage[key] = PARTIAL
        start = self._since
        for key, window in TFI_COVERAGE:
            if out[key] is not None and (start is None or now - start < window):
                coverage[key] = PARTIAL

    def _flow_fields(
        self,
        book: L2Book | None,
        now: int,
        trigger: str,
        out: dict[str, object],
        flags: set[str],
        coverage: dict[str, str],
    ) -> float | None:
        """The per-event part of `fields` (the compiled core does all of it in one C call): book state, `ofi`,
        the OFI windows and the trade-flow windows at `now`. Returns the mid (None without a VALID two-sided
        book)."""
        mid: float | None = None
        if book is None:
            for key in (
                "bid_px", "bid_sz", "ask_px", "ask_sz", "mid", "spread_bps", "wmid",
                *_DEPTH_KEYS, *_BAND_KEYS[0], *_BAND_KEYS[1], "ofi",
            ):  # fmt: skip
                out[key] = None
        else:
            mid = self._book_fields(book, out, flags, coverage)
            out["ofi"] = self._last_e if trigger == "book" else None

        if self._first_book_seen:
            out["ofi_raw_1s"] = self._win_1s.value(now)
            out["ofi_raw_10s"] = self._win_10s.value(now)
            out["ofi_raw_60s"] = self._win_60s.value(now)
            out["ofi_ew_10s"] = self._ew_10s.value(now)
        else:
            out["ofi_raw_1s"] = out["ofi_raw_10s"] = out["ofi_raw_60s"] = out["ofi_ew_10s"] = None

        out["tfi_10s"] = self._tfi_10s.value(now)
        out["tfi_60s"] = self._tfi_60s.value(now)
        return mid

    def _book_fields(
        self, book: L2Book, out: dict[str, object], flags: set[str], coverage: dict[str, str]
    ) -> float | None:
        """Fill the book-state fields; returns the mid (None with an empty side)."""
        best_bid = book.bids.best()
        best_ask = book.asks.best()
        bid_px, bid_sz = best_bid if best_bid is not None else (None, None)
        ask_px, ask_sz = best_ask if best_ask is not None else (None, None)
        out["bid_px"] = bid_px
        out["bid_sz"] = bid_sz
        out["ask_px"] = ask_px
        out["ask_sz"] = ask_sz
        mid = (bid_px + ask_px) * 0.5 if bid_px is not None and ask_px is not None else None
        out["mid"] = mid
        out["spread_bps"] = spread_bps(bid_px, ask_px)
        out["wmid"] = weighted_mid(bid_px, bid_sz, ask_px, ask_sz)

        imbalances, empty_side = depth_imbalances(book, DEPTH_LEVELS)
        for key, value in zip(_DEPTH_KEYS, imbalances, strict=True):
            out[key] = value
        if empty_side:
            flags.add("EMPTY_SIDE")

        for band, (bid_key, ask_key) in zip(BANDS_BPS, _BAND_KEYS, strict=True):
            if mid is None or mid <= 0.0:
                # Band depth is measured from the same-state mid; without one it is undefined (§3.3).
                out[bid_key] = None
                out[ask_key] = None
                continue
            bid_depth, ask_depth, bid_short, ask_short = band_depth(book, mid, band)
            out[bid_key] = bid_depth
            out[ask_key] = ask_depth
            if bid_short:
                coverage[bid_key] = EXHAUSTED
            if ask_short:
                coverage[ask_key] = EXHAUSTED
        return mid
