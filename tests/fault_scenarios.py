"""Helpers of the per-venue fault tests (tests/integration/test_faults_<venue>.py): one real daemon against a venue
simulator that plays a scenario of faults back to back, everything the daemon publishes checked against the
simulator's ground truth (issue 10 items 1-2).

`Bus` records every payload of the daemon's embedded bus with its receive time; `periods` turns a book's status and
book payloads into its not-VALID periods; `check_recovery` asserts that each fault's books went INVALID (or their
connection dropped) and came back VALID within the fault's bound, that every INVALID period has a fault aimed at
that book, and `compare` runs the truth comparator over the payloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from flowgauge.simulate.faults import FaultScheduler
from flowgauge.simulate.truth import Comparator, TruthRecord

Message = tuple[float, str, dict[str, Any]]  # (receive time, topic, payload)


@dataclass(frozen=True)
class Fired:
    kind: str
    instrument: str | None  # the venue's id, None for a fault not aimed at one instrument
    t: float  # wall time, s


class Bus:
    """Everything the daemon publishes on its embedded bus, in order, stamped with the receive time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[Message] = []
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> bool:
        """Connect and subscribe (raises OSError while the daemon is not listening yet), then read on."""
        ws = await connect(f"ws://127.0.0.1:{self.port}", open_timeout=2, max_size=None)
        await ws.send(orjson.dumps({"op": "subscribe", "patterns": ["flowgauge.v1.>"]}).decode())
        self.task = asyncio.create_task(self._read(ws))
        return True

    async def _read(self, ws: ClientConnection) -> None:
        async with ws:
            async for raw in ws:
                message = orjson.loads(raw)
                if "payload" in message and not message.get("snapshot"):
                    self.messages.append((time.time(), message["topic"], message["payload"]))

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    def states(self) -> dict[str, str]:
        """The latest book state of every symbol seen."""
        latest: dict[str, str] = {}
        for _, topic, payload in self.messages:
            state = _state(topic, payload)
            if state is not None:
                latest[payload["symbol"]] = state
        return latest

    def valid(self) -> set[str]:
        return {symbol for symbol, state in self.states().items() if state == "VALID"}


def _state(topic: str, payload: Mapping[str, Any]) -> str | None:
    if topic.startswith("flowgauge.v1.status."):
        return str(payload["state"])
    if payload.get("trigger") == "book":
        return str(payload["book_state"])
    return None


def periods(messages: Iterable[Message], symbol: str, since: float) -> list[list[float]]:
    """[start, end] of every period `symbol` was not VALID after `since` (end inf while it lasts)."""
    out: list[list[float]] = []
    valid = True
    for t, topic, payload in messages:
        if t < since or payload.get("symbol") != symbol:
            continue
        state = _state(topic, payload)
        if state is None:
            continue
        if valid and state != "VALID":
            out.append([t, float("inf")])
        elif not valid and state == "VALID":
            out[-1][1] = t
        valid = state == "VALID"
    return out


def fired(scheduler: FaultScheduler) -> Iterator[Fired]:
    for entry in scheduler.log:
        yield Fired(entry["kind"], entry["instrument"], entry["ts_ns"] / 1e9)


def compare(
    messages: Iterable[Message],
    truth: Mapping[str, tuple[list[TruthRecord], int]],
    symbols: Mapping[str, str],
    venue: str,
) -> Comparator:
    """Every payload of `venue` against the truth (status payloads only move the comparator's state)."""
    comparator = Comparator(symbols, whole_books=venue == "hyperliquid")  # l2Book pushes are whole books
    for symbol, (records, evicted) in truth.items():
        assert evicted == 0, f"{symbol}: truth ring evicted {evicted} records; raise truth_capacity"
        comparator.add_truth(symbol, records)
    for _, topic, payload in messages:
        if topic.startswith("flowgauge.v1.status."):
            if payload["state"] != "VALID":
                comparator.not_valid(payload["symbol"])
        elif topic.startswith(f"flowgauge.v1.{venue}."):
            comparator.check(payload)
    # Nothing skipped: a payload of a symbol the comparator does not know would never have been compared.
    assert comparator.untracked == 0, f"{comparator.untracked} {venue} payloads of an untracked symbol"
    return comparator


def check_recovery(
    messages: list[Message],
    faults: list[Fired],
    books: Iterable[str],
    since: float,
    targets: Callable[[Fired], set[str]],
    bounds: Mapping[str, float],
    detect: Callable[[Fired], float],
    *,
    inside: frozenset[str] = frozenset(),
    optional: frozenset[str] = frozenset(),
) -> list[str]:
    """Problems with how the books went through `faults` (empty when none):

    * each fault's target books went not-VALID within `detect(fault)` s of it, or were not VALID already (a kind in
      `inside` fires while its book is not VALID, e.g. at a resync's subscribe; a kind in `optional` may leave the
      book VALID), and were VALID again within `bounds[kind]` s of going INVALID (or of the fault, if later);
    * every not-VALID period of one of `books` after `since` starts within `detect` of a fault aimed at that book
      (other books untouched).
    """
    problems: list[str] = []
    symbols = set(books)
    spans = {symbol: periods(messages, symbol, since) for symbol in symbols}
    for fault in faults:
        for symbol in sorted(targets(fault)):
            # The period the fault opened, or (a kind that fires at a resync, or a book already not VALID when the
            # fault came) the one it fell in.
            starting = [p for p in spans[symbol] if fault.t - 0.05 <= p[0] <= fault.t + detect(fault)]
            during = [p for p in spans[symbol] if p[0] <= fault.t + 0.05 <= p[1]]
            hits = during or starting if fault.kind in inside else starting or during
            if not hits:
                if fault.kind not in optional:
                    problems.append(f"{fault.kind} on {symbol}: never INVALID")
                continue
            # Measured from when the book went INVALID (a lost change shows at the next one), or from the fault.
            took = hits[0][1] - max(fault.t, hits[0][0])
            if took > bounds[fault.kind]:
                problems.append(
                    f"{fault.kind} on {symbol}: VALID again after {took:.2f} s > {bounds[fault.kind]:.2f} s"
                )
    for symbol, symbol_spans in spans.items():
        for start, _ in symbol_spans:
            if not any(symbol in targets(f) and f.t - 0.05 <= start <= f.t + detect(f) for f in faults):
                problems.append(f"{symbol}: INVALID at +{start - since:.2f} s with no fault aimed at it")
    return problems
