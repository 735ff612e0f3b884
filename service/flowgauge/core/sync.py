"""`BookSync` over the compiled core's book, with the common case of a delta in one C call.

Same state machine, same results as `book.sync.BookSync` (the reference): only a VALID book's next delta, as
the venue's rule defines it, takes the short path (`CBook.apply_next`: continuity check, level application,
crossing check). Anything else (first delta after a snapshot, stale ids, gaps, buffering) goes through the
reference code unchanged.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from flowgauge.book.sequencing import binance_futures, chained_ids, consecutive_ids, okx_books
from flowgauge.book.sync import ApplyResult, BookSync, SequenceRule
from flowgauge.types import BookDelta, BookState, InvalidReason

__all__ = ["CompiledBookSync", "rule_code"]


def rule_code(core: ModuleType, rule: SequenceRule) -> int:
    """The C rule for the True verdict of `rule` after the first delta (RULE_NONE: no short path)."""
    if rule is consecutive_ids:
        return int(core.RULE_CONSECUTIVE)
    # After the first delta each of these says "next" exactly when prev_seq equals the book's id.
    if rule is chained_ids or rule is binance_futures or rule is okx_books:
        return int(core.RULE_CHAINED)
    return int(core.RULE_NONE)


class CompiledBookSync(BookSync):
    __slots__ = ("_rule_code",)

    def __init__(self, core: ModuleType, rule: SequenceRule, buffer_deltas: bool, book: Any) -> None:
        super().__init__(rule, buffer_deltas=buffer_deltas, book=book)
        self._rule_code = rule_code(core, rule)

    def on_delta(self, delta: BookDelta) -> ApplyResult:
        if self.state is BookState.VALID and not self._first:
            done = self.book.apply_next(delta, self._rule_code)  # type: ignore[attr-defined]  # a CBook
            if done:
                result = self._result  # _fresh_result() inline: this is the hot path
                result.applied = result.reset = result.changed = result.needs_resync = False
                if done == 1:
                    result.applied = True
                else:
                    self._invalidate(InvalidReason.CROSSED, f"crossed after {delta.seq}", result)
                return result
        return super().on_delta(delta)
