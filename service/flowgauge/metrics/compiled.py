"""`InstrumentMetrics` with its per-event book math in the compiled core (flowgauge.core._core).

Only the hot steps are replaced, each by C code that mirrors the reference operation for operation: the top
of book and CKS `e_n` (`_book_event`), the book-state fields (`_book_fields`: best levels, mid, spread, wmid,
depth imbalances, band depths), the OFI windows (exact sliding sums `ofi_raw_1s/10s/60s` and the decayed
sum `ofi_ew_10s`) and the trade-flow windows (`tfi_10s/60s`), same primitives in C. Everything else (flags,
OI, funding, the order of the fields) is the reference's own code, so both cores publish the same payloads.
"""

from __future__ import annotations

from typing import Any

from flowgauge.core import compiled_module
from flowgauge.metrics.accumulator import _S, WARMUP_NS, InstrumentMetrics
from flowgauge.metrics.extended import ExtendedMetrics
from flowgauge.types import FundingRate, Instrument, InvalidReason, LongShortRatio, OpenInterest, Trade

__all__ = ["CompiledInstrumentMetrics"]


class CompiledInstrumentMetrics(InstrumentMetrics):
    """Same inputs, same outputs as `InstrumentMetrics`; requires the book to be the core's `CBook`."""

    __slots__ = ("_book_fields_c", "_flow_fields_c", "_ofi", "_payload_fields", "_state", "_state_stale")

    def __init__(self, instrument: Instrument, extended: ExtendedMetrics | None = None) -> None:
        super().__init__(instrument, extended)
        core = compiled_module()
        self._ofi = core.OfiState()
        self._book_fields_c = core.book_fields
        self._flow_fields_c = core.flow_fields
        self._win_1s = core.SlidingSum(1 * _S)
        self._win_10s = core.SlidingSum(10 * _S)
        self._win_60s = core.SlidingSum(60 * _S)
        self._ew_10s = core.DecayedSum.for_window(10.0)
        self._tfi_10s = core.TradeFlowImbalance(10 * _S)
        self._tfi_60s = core.TradeFlowImbalance(60 * _S)
        self._payload_fields = core.PayloadFields(
            self._win_1s, self._win_10s, self._win_60s, self._ew_10s, self._tfi_10s, self._tfi_60s, WARMUP_NS
        )
        # OI, funding and long/short skew change only with their own inputs: their payload values are rebuilt
        # then (on_trade, on_open_interest, on_funding, on_long_short), not for every book payload.
        self._state: tuple[Any, ...] = ()
        self._state_stale = True

    def on_trade(self, trade: Trade) -> None:
        super().on_trade(trade)
        self._state_stale = True

    def on_open_interest(self, oi: OpenInterest) -> None:
        super().on_open_interest(oi)
        self._state_stale = True

    def on_funding(self, funding: FundingRate) -> None:
        super().on_funding(funding)
        self._state_stale = True

    def on_long_short(self, ratio: LongShortRatio) -> None:
        super().on_long_short(ratio)
        self._state_stale = True

    def _state_values(self) -> tuple[Any, ...]:
        """The slow-moving part of `fields`, computed as the reference does (see PayloadFields.fill)."""
        core = compiled_module()
        oi = self._oi
        funding = self._funding
        mark = funding.mark_price
        flags = 0
        if oi.partial and oi.open_ratio is not None:
            flags |= core.OI_PARTIAL
        if oi.inconsistent:
            flags |= core.OI_INCONSISTENT
        if oi.stale:
            flags |= core.OI_STALE
        return (
            oi.oi,
            oi.oi * mark if oi.oi is not None and mark is not None else None,
            oi.chg_pct,
            oi.open_ratio,
            flags,
            funding.rate_8h(),
            mark,
            funding.index_price,
            self.ls_skew.get("ls_skew_accounts"),
            self.ls_skew.get("ls_skew_top_positions"),
        )

    def fields(
        self, book: Any, ts_exchange: int, trigger: str, out: dict[str, object] | None = None
    ) -> dict[str, object]:
        """`InstrumentMetrics.fields`, every field in one C call (same values, same order)."""
        if self._state_stale:
            self._state = self._state_values()
            self._state_stale = False
        out = self._payload_fields.fill(
            self._state,
            book,
            self._last_e,
            trigger,
            self._first_book_seen,
            ts_exchange,
            self._warm_start,
            self._since,
            self._open_flags,
            self._flag_until,
            {} if out is None else out,
        )
        if self.extended is not None:
            self.extended.fill(book, out, ts_exchange)
        return out  # type: ignore[return-value]

    def on_book(self, book: Any, ts_exchange: int) -> None:
        """`InstrumentMetrics.on_book` with `_book_event`'s C call inline (one Python call less per event)."""
        e = self._ofi.event(book, ts_exchange, self._win_1s, self._win_10s, self._win_60s, self._ew_10s)
        self._first_book_seen = True
        if self.extended is not None:
            self.extended.on_book(book, ts_exchange)
        if e is None:
            self._first_state(ts_exchange)
            return
        self._last_e = e
        self.book_events += 1

    def book_payload(self, book: Any, ts_exchange: int, out: dict[str, object]) -> None:
        """`on_book(book, ts_exchange)` then `fields(book, ts_exchange, "book", out)` in one Python call: the
        engine's hot path for an applied delta (same steps, same order)."""
        e = self._ofi.event(book, ts_exchange, self._win_1s, self._win_10s, self._win_60s, self._ew_10s)
        self._first_book_seen = True
        extended = self.extended
        if extended is not None:
            extended.on_book(book, ts_exchange)
        if e is None:
            self._first_state(ts_exchange)
        else:
            self._last_e = e
            self.book_events += 1
        if self._state_stale:
            self._state = self._state_values()
            self._state_stale = False
        self._payload_fields.fill(
            self._state,
            book,
            self._last_e,
            "book",
            True,
            ts_exchange,
            self._warm_start,
            self._since,
            self._open_flags,
            self._flag_until,
            out,
        )
        if extended is not None:
            extended.fill(book, out, ts_exchange)

    def _book_event(self, book: Any, ts_exchange: int) -> float | None:
        return self._ofi.event(  # type: ignore[no-any-return]
            book, ts_exchange, self._win_1s, self._win_10s, self._win_60s, self._ew_10s
        )

    def on_book_invalid(self, ts_exchange: int, reason: InvalidReason) -> None:
        super().on_book_invalid(ts_exchange, reason)
        self._ofi.forget()

    def _book_fields(
        self, book: Any, out: dict[str, object], flags: set[str], coverage: dict[str, str]
    ) -> float | None:
        return self._book_fields_c(book, out, flags, coverage)  # type: ignore[no-any-return]

    def _flow_fields(
        self,
        book: Any,
        now: int,
        trigger: str,
        out: dict[str, object],
        flags: set[str],
        coverage: dict[str, str],
    ) -> float | None:
        return self._flow_fields_c(  # type: ignore[no-any-return]
            book,
            self._last_e,
            trigger,
            self._first_book_seen,
            self._win_1s,
            self._win_10s,
            self._win_60s,
            self._ew_10s,
            self._tfi_10s,
            self._tfi_60s,
            now,
            out,
            flags,
            coverage,
        )
