"""The extension point for per-book-event metric families: one `ExtendedMetrics` per instrument.

Protocol (`BookFamily`), one object per selected family per instrument, called by both cores' accumulators
(`InstrumentMetrics`, `CompiledInstrumentMetrics`) in this order:

* `on_book(book, ts_ns)`: a book message was applied to a VALID book (`book` is the core's book: `L2Book` or
  `CBook`, both answer `bids/asks.best()`, `.top(n)`, `.notional_within(price)`, `len()`); `ts_ns` is its
  exchange time. Update flow state from the previous state to this one (metrics.md Appendix B steps 3-4).
* `on_book_invalid(ts_ns)`: the book left VALID. Forget the previous state: the next `on_book` is a first state,
  no flow crosses the invalid period (metrics.md 1.4).
* `fill(book, out, ts_ns, flags)`: write the family's keys (every one of them, None when undefined) into the payload
  `out`, evaluated at the payload's exchange time `ts_ns`; `book` is the VALID book or None. Add quality flags to
  the set `flags` (they join the payload's `quality`). Called once per payload, after the core fields, whatever
  triggered the payload.

Both cores must publish identical values. The families of metrics.md 1.3 / 2 / 3 / 4 (`metrics.book_families`)
are written once in Cython's pure-Python mode: the pure-Python core imports that module, the compiled core runs the
same source compiled by setup.py as `flowgauge.core._families` (same operations on IEEE doubles, in the same order,
compiled without FMA contraction: the same bits). A family that keeps windows gets the window classes of its core
(`windows` below: `metrics.windows` or the core's C ones, which tests already hold identical).

To add a family: put its keys in `metrics.families.FAMILIES`, its parameters in `metrics.params`, and a factory
`(instrument, params, windows) -> BookFamily` in `FACTORIES` below (families without per-book-event state need none).

Slow families (`SlowFamily`: trade, OI, funding, liquidation and long/short cadence, issue 11 items 6 and 7) are
plain Python shared by both cores, built from `SLOW_FACTORIES`: the accumulator hands them every such event
(`on_trade`, ... below) and they fill their keys with the book families, in `FAMILIES` order. They see no book
event (so they cost nothing on the book hot path) but are filled on every payload: their windows are evaluated at
its time. They may add entries to the payload's `coverage` dict (and then flag PARTIAL_WINDOW).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Protocol

from flowgauge.metrics.params import MetricParams
from flowgauge.metrics.positioning import PositioningFamily
from flowgauge.metrics.trade_flow import TradeFlowFamily
from flowgauge.types import FundingRate, Instrument, Liquidation, LongShortRatio, OpenInterest, Trade

__all__ = ["FACTORIES", "SLOW_FACTORIES", "BookFamily", "ExtendedMetrics", "SlowFamily", "book_families_module"]


class BookFamily(Protocol):
    """The per-instrument state of one per-book-event family (see the module docstring)."""

    def on_book(self, book: Any, ts_ns: int) -> None: ...
    def on_book_invalid(self, ts_ns: int) -> None: ...
    def fill(self, book: Any, out: dict[str, object], ts_ns: int, flags: set[str]) -> None: ...


Factory = Callable[[ModuleType, Instrument, MetricParams, ModuleType], BookFamily]
"""(families implementation module, instrument, params, window classes module) -> the family's state."""

FACTORIES: dict[str, Factory] = {
    "ofi_ext": lambda impl, inst, params, win: impl.OfiExt(inst.tick_size, params.ofi_ext, win),
    "mlofi": lambda impl, inst, params, win: impl.Mlofi(params.mlofi, params.integrated_ofi, win),
    "depth_ext": lambda impl, inst, params, win: impl.DepthExt(params.depth_ext),
    "microprice": lambda impl, inst, params, win: impl.Microprice(inst.tick_size, params.microprice),
    # Issue 11 items 8, 9, 11 (metrics.risk_families): one pure-Python source that both cores run as is.
    "fragility": lambda impl, inst, params, win: _risk_families().FragilityFamily(params.fragility, params.ew),
    "ew": lambda impl, inst, params, win: _risk_families().EwFamily(params.ew),
    "risk": lambda impl, inst, params, win: _risk_families().RiskFamily(params.risk, params.ew),
    # Issue 11 item 1 (metrics.ofi_l1): one source both cores run as is, over their own window classes. It also
    # takes the best-quote stream (`on_best_quote`, see ExtendedMetrics.on_best_quote).
    "ofi_l1": lambda impl, inst, params, win: _ofi_l1().OfiL1(win),
}


def _ofi_l1() -> ModuleType:
    from flowgauge.metrics import ofi_l1

    return ofi_l1


def _risk_families() -> ModuleType:
    from flowgauge.metrics import risk_families

    return risk_families


class SlowFamily(Protocol):
    """The per-instrument state of one slow-cadence family (see the module docstring)."""

    def on_trade(self, trade: Trade) -> None: ...
    def on_open_interest(self, oi: OpenInterest) -> None: ...
    def on_funding(self, funding: FundingRate) -> None: ...
    def on_liquidation(self, liq: Liquidation) -> None: ...
    def on_long_short(self, ratio: LongShortRatio) -> None: ...
    def on_feed_reset(self, ts_ns: int) -> None: ...
    def fill(self, book: Any, out: dict[str, object], ts_ns: int, flags: set[str]) -> None: ...


SLOW_FACTORIES: dict[str, Callable[[Instrument, MetricParams], SlowFamily]] = {
    "trade_flow": lambda inst, params: TradeFlowFamily(params.trade_flow),
    "positioning": lambda inst, params: PositioningFamily(inst, params.positioning),
}


def book_families_module(compiled: bool) -> ModuleType:
    """The implementation of the per-book-event families: the compiled extension or the reference source."""
    if compiled:
        from flowgauge.core import compiled_families

        return compiled_families()
    from flowgauge.metrics import book_families

    return book_families


def _window_classes(compiled: bool) -> ModuleType:
    if compiled:
        from flowgauge.core import compiled_module

        return compiled_module()
    from flowgauge.metrics import windows

    return windows


class ExtendedMetrics:
    """The per-book-event families selected for one instrument, called in `FAMILIES` order."""

    __slots__ = ("_families", "_filled", "_slow")

    def __init__(
        self,
        families: Iterable[BookFamily],
        slow: Iterable[SlowFamily] = (),
        fill_order: Iterable[BookFamily | SlowFamily] | None = None,
    ) -> None:
        self._families = tuple(families)
        self._slow = tuple(slow)
        # every family, book and slow, in FAMILIES order (their keys' order in a payload built without template)
        self._filled: tuple[BookFamily | SlowFamily, ...] = (
            tuple(fill_order) if fill_order is not None else (*self._families, *self._slow)
        )

    @classmethod
    def build(
        cls, selected: Iterable[str], instrument: Instrument, params: MetricParams, compiled: bool
    ) -> ExtendedMetrics | None:
        """The families of `selected` (resolved names) that have per-book-event or slow state; None when none do."""
        names = [name for name in selected if name in FACTORIES or name in SLOW_FACTORIES]
        if not names:
            return None
        book: list[BookFamily] = []
        slow: list[SlowFamily] = []
        order: list[BookFamily | SlowFamily] = []
        if any(name in FACTORIES for name in names):
            impl = book_families_module(compiled)
            windows = _window_classes(compiled)
        for name in names:
            if name in FACTORIES:
                family: Any = FACTORIES[name](impl, instrument, params, windows)
                book.append(family)
            else:
                family = SLOW_FACTORIES[name](instrument, params)
                slow.append(family)
            order.append(family)
        return cls(book, slow, order)

    def on_book(self, book: Any, ts_ns: int) -> None:
        for family in self._families:
            family.on_book(book, ts_ns)

    def on_book_invalid(self, ts_ns: int) -> None:
        for family in self._families:
            family.on_book_invalid(ts_ns)

    def on_best_quote(
        self, bid_px: float, bid_sz: float, ask_px: float, ask_sz: float, ts_ns: int, seq: int, reset: bool
    ) -> None:
        """A state of the venue's best-quote stream (an empty side: price -inf / +inf, size 0; `seq` -1 when the
        stream has no id) for the book families that take one (`on_best_quote`: ofi_l1); the others never see
        it, and it makes no payload."""
        for family in self._families:
            on_quote = getattr(family, "on_best_quote", None)
            if on_quote is not None:
                on_quote(bid_px, bid_sz, ask_px, ask_sz, ts_ns, seq, reset)

    def fill(self, book: Any, out: dict[str, Any], ts_ns: int) -> None:
        """Fill every family's keys; flags they raise are merged into `out["quality"]` (kept sorted)."""
        flags: set[str] = set()
        for family in self._filled:
            family.fill(book, out, ts_ns, flags)
        if flags:
            quality = out.get("quality")
            if isinstance(quality, list) and not flags.issubset(quality):
                out["quality"] = sorted({*quality, *flags})

    # Slow-cadence inputs (SlowFamily), from the accumulator's on_* paths.

    def on_trade(self, trade: Trade) -> None:
        for family in self._slow:
            family.on_trade(trade)

    def on_open_interest(self, oi: OpenInterest) -> None:
        for family in self._slow:
            family.on_open_interest(oi)

    def on_funding(self, funding: FundingRate) -> None:
        for family in self._slow:
            family.on_funding(funding)

    def on_liquidation(self, liq: Liquidation) -> None:
        for family in self._slow:
            family.on_liquidation(liq)

    def on_long_short(self, ratio: LongShortRatio) -> None:
        for family in self._slow:
            family.on_long_short(ratio)

    def on_feed_reset(self, ts_ns: int) -> None:
        """The instrument's feed was reset (reconnect, reload): trades may have been lost."""
        for family in self._slow:
            family.on_feed_reset(ts_ns)
