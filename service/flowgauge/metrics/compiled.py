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
from flowgauge.metrics.accumulator import _S, InstrumentMetrics
from flowgauge.types import Instrument, InvalidReason

__all__ = ["CompiledInstrumentMetrics"]


class CompiledInstrumentMetrics(InstrumentMetrics):
    """Same inputs, same outputs as `InstrumentMetrics`; requires the book to be the core's `CBook`."""

    __slots__ = ("_book_fields_c", "_flow_fields_c", "_ofi")

    def __init__(self, instrument: Instrument) -> None:
        super().__init__(instrument)
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

    def _book_event(self, book: Any, ts_exchange: int) -> float | None:
        return self._ofi.event(  # type: ignore[no-any-return]
            book, ts_exchange, self._win_1s, self._win_10s, self._win_60s, self._ew_10s
        )

    def on_book_invalid(self, ts_exchange: int, reason: InvalidReason) -> None:
        super().on_book_invalid(ts_exchange, reason)
        self._ofi.forget()

    def _book_fields(self, book: Any, out: dict[str, object], flags: set[str]) -> float | None:
        return self._book_fields_c(book, out, flags)  # type: ignore[no-any-return]

    def _flow_fields(self, book: Any, now: int, trigger: str, out: dict[str, object], flags: set[str]) -> float | None:
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
        )
