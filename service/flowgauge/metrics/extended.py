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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Protocol

from flowgauge.metrics.params import MetricParams
from flowgauge.types import Instrument

__all__ = ["FACTORIES", "BookFamily", "ExtendedMetrics", "book_families_module"]


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
}


def _risk_families() -> ModuleType:
    from flowgauge.metrics import risk_families

    return risk_families


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

    __slots__ = ("_families",)

    def __init__(self, families: Iterable[BookFamily]) -> None:
        self._families = tuple(families)

    @classmethod
    def build(
        cls, selected: Iterable[str], instrument: Instrument, params: MetricParams, compiled: bool
    ) -> ExtendedMetrics | None:
        """The families of `selected` (resolved names) that have per-book-event state; None when there are none."""
        names = [name for name in selected if name in FACTORIES]
        if not names:
            return None
        impl = book_families_module(compiled)
        windows = _window_classes(compiled)
        return cls(FACTORIES[name](impl, instrument, params, windows) for name in names)

    def on_book(self, book: Any, ts_ns: int) -> None:
        for family in self._families:
            family.on_book(book, ts_ns)

    def on_book_invalid(self, ts_ns: int) -> None:
        for family in self._families:
            family.on_book_invalid(ts_ns)

    def fill(self, book: Any, out: dict[str, Any], ts_ns: int) -> None:
        """Fill every family's keys; flags they raise are merged into `out["quality"]` (kept sorted)."""
        flags: set[str] = set()
        for family in self._families:
            family.fill(book, out, ts_ns, flags)
        if flags:
            quality = out.get("quality")
            if isinstance(quality, list) and not flags.issubset(quality):
                out["quality"] = sorted({*quality, *flags})
