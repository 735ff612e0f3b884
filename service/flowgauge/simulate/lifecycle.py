"""Instrument lifecycle a simulator can play: an instrument delisted, or a dated contract expiring, at a given time.

Used by the venue simulators (Binance USD-M and Deribit in full, Bybit in its instrument metadata) so that the daemon's
retirement of books can be tested with real components; `flowgauge simulate --delist ID@T --expire ID@T` sets it
from the command line. Imports nothing from the daemon: the simulators are the independent truth.

Two kinds, by venue instrument id (`BTCUSDT`), at `at_s` (unix seconds):
* delisted (not announced): the metadata says nothing until `at_s`; from then on the instrument is shown as no longer
  trading (Binance `status` CLOSE, Bybit `status` Closed).
* expiring (announced): the metadata carries `at_s` from the start as the contract's delivery time (Binance
  `deliveryDate`, Bybit `deliveryTime`, which on a perpetual is its scheduled delisting time); from `at_s` on it is
  shown as delivered (Binance DELIVERED, Bybit Closed; Deribit `expiration_timestamp`, then `is_active` false).
Deribit also says so on its stream: an `instrument.state` notification (`settled` when expiring, `closed` when
delisted) at `at_s`.
Either way, from `at_s` a simulator that plays streams serves no more frames of it and refuses requests about it,
counting each in `requests_after` (how a test proves that nothing asks for a retired book any more).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Lifecycle", "LifecycleError", "Retirement", "parse_retirement"]


class LifecycleError(ValueError):
    """A --delist / --expire spec that cannot be used (one line for the user)."""


@dataclass(frozen=True, slots=True)
class Retirement:
    instrument: str  # the venue's own id, e.g. BTCUSDT
    at_s: float  # unix seconds
    announced: bool  # expiring (the metadata says when from the start) rather than delisted without notice

    @property
    def at_ms(self) -> int:
        return int(self.at_s * 1000)


def parse_retirement(spec: str, announced: bool, start_s: float | None = None) -> Retirement:
    """`ID@T`: T is unix seconds, or `+N` seconds after `start_s` (default: now).

    Raises:
        LifecycleError: not of that shape.
    """
    instrument, sep, when = spec.partition("@")
    if not sep or not instrument or not when:
        raise LifecycleError(f"{spec!r}: expected INSTRUMENT@TIME (unix seconds, or +SECONDS from now)")
    try:
        value = float(when)
    except ValueError:
        raise LifecycleError(f"{spec!r}: {when!r} is not a number of seconds") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise LifecycleError(f"{spec!r}: the time must be finite")
    at_s = (time.time() if start_s is None else start_s) + value if when.startswith("+") else value
    return Retirement(instrument, at_s, announced)


class Lifecycle:
    """The retirements one simulator plays, by venue instrument id."""

    def __init__(self, retirements: Iterable[Retirement] = (), clock: Callable[[], float] = time.time) -> None:
        self._by_id = {r.instrument: r for r in retirements}
        self._clock = clock
        self.requests_after: collections.Counter[str] = collections.Counter()  # refused requests, by instrument

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def schedule(self, retirement: Retirement) -> None:
        """Add (or move) one instrument's retirement while the simulator runs."""
        self._by_id[retirement.instrument] = retirement

    def retirements(self) -> list[Retirement]:
        return list(self._by_id.values())

    def retirement(self, instrument: str) -> Retirement | None:
        return self._by_id.get(instrument)

    def retired(self, instrument: str) -> bool:
        """`instrument` stopped trading (its time has come)."""
        r = self._by_id.get(instrument)
        return r is not None and self._clock() >= r.at_s

    def refuse(self, instrument: str) -> bool:
        """A request about `instrument` arrived: True (and counted) when it must be refused (retired)."""
        if self.retired(instrument):
            self.requests_after[instrument] += 1
            return True
        return False

    def binance_row(self, row: MutableMapping[str, Any]) -> None:
        """Patch one exchangeInfo `symbols` row in place."""
        r = self._by_id.get(str(row.get("symbol")))
        if r is None:
            return
        if r.announced:
            row["deliveryDate"] = r.at_ms
        if self._clock() >= r.at_s:
            row["status"] = "DELIVERED" if r.announced else "CLOSE"  # USD-M's field (COIN-M's is contractStatus)

    def bybit_row(self, row: MutableMapping[str, Any]) -> None:
        """Patch one instruments-info `list` row in place."""
        r = self._by_id.get(str(row.get("symbol")))
        if r is None:
            return
        if r.announced:
            row["deliveryTime"] = str(r.at_ms)
        if self._clock() >= r.at_s:
            row["status"] = "Closed"

    def deribit_row(self, row: MutableMapping[str, Any]) -> None:
        """Patch one get_instruments row in place."""
        r = self._by_id.get(str(row.get("instrument_name")))
        if r is None:
            return
        if r.announced:
            row["expiration_timestamp"] = r.at_ms
        if self._clock() >= r.at_s:
            row["is_active"] = False
