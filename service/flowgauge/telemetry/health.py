"""What went wrong last, per venue and per book: the memory behind /status and the /readyz reasons.

Connectors report each venue failure once, with its cause class (`connectors.failures`); this board keeps
the latest one per venue and per book it affected, and a count per cause. Bounded by construction: one
entry per configured venue and book, counts keyed by the fixed cause vocabulary. No I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from flowgauge.connectors.failures import CAUSE_CLASSES

__all__ = ["HealthBoard", "LastError"]


@dataclass(frozen=True, slots=True)
class LastError:
    cause: str  # a cause class: dns, connect, tls, http_<code>, timeout, closed, protocol, other
    where: str  # markets, ws, rest:<kind>
    message: str
    ts_ns: int

    def as_dict(self) -> dict[str, object]:
        stamp = datetime.fromtimestamp(self.ts_ns / 1e9, UTC).isoformat(timespec="milliseconds")
        return {"cause": self.cause, "where": self.where, "message": self.message, "time": stamp.replace("+00:00", "Z")}


class HealthBoard:
    """Latest failure per configured venue and book, and failures per (venue, cause).

    Args:
        configured: venue -> its configured symbols; reports about anything else are ignored.
        clock: ns wall clock (injected for tests).
    """

    def __init__(self, configured: Mapping[str, Sequence[str]], clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._venue_error: dict[str, LastError | None] = dict.fromkeys(configured)
        self._book_error: dict[tuple[str, str], LastError | None] = {
            (venue, symbol): None for venue, symbols in configured.items() for symbol in symbols
        }
        self._counts: dict[str, dict[str, int]] = {venue: {} for venue in configured}

    def record(self, venue: str, where: str, cause: str, message: str, symbols: Iterable[str] = ()) -> None:
        if venue not in self._venue_error:
            return
        if cause not in CAUSE_CLASSES:
            cause = "other"
        error = LastError(cause, where, message, self._clock())
        self._venue_error[venue] = error
        for symbol in symbols:
            if (venue, symbol) in self._book_error:
                self._book_error[(venue, symbol)] = error
        counts = self._counts[venue]
        counts[cause] = counts.get(cause, 0) + 1

    def venue_error(self, venue: str) -> LastError | None:
        return self._venue_error.get(venue)

    def book_error(self, venue: str, symbol: str) -> LastError | None:
        return self._book_error.get((venue, symbol))

    def counts(self, venue: str) -> dict[str, int]:
        """Failures of `venue` so far, by cause class."""
        return dict(self._counts.get(venue, {}))
