"""The soak's payload checker: every payload the daemon publishes, compared with the simulators' ground truth.

Runs in `flowgauge soak`'s own process (never the daemon's: its memory and CPU are not what the soak measures).
It subscribes to the daemon's embedded bus like any strategy (`flowgauge.v1.>`, through the SDK) and keeps the
payloads of each round; every round it first pages each instrument's new truth records from its simulator
(`GET /_flowgauge/truth?instrument=X&since=I`, see `flowgauge.simulate.truth`), then checks the round's
payloads in publish order with `truth.Comparator`, one per instrument. A simulator records the truth of a book
message before it sends it, so the truth of every payload received before the round started is there.

What is checked: every VALID book payload of a venue whose simulator keeps truth (sizes converted where the venue's
unit is not the payload's base unit: OKX contracts), against the truth record of its `book_seq` (best levels, depth
imbalance at 5 and 10, `ofi`); and on every venue, that no VALID book payload is crossed. A payload the checker
cannot place (the bus dropped some for this slow subscriber, a reconnect replayed current values) breaks the `ofi`
chain only: the next payload's best levels and imbalances are still compared, its `ofi` is counted as unverified.
Memory is bounded: checked truth records are dropped every round, payloads are kept for one round only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from flowgauge.simulate.truth import Comparator, TruthRecord

__all__ = ["MAX_WAITING", "TRUTH_VENUES", "PayloadChecker", "run_rounds"]

# Venues whose simulators keep truth (all five, since the fault framework).
TRUTH_VENUES = frozenset({"bybit", "binanceusdm", "okx", "deribit", "hyperliquid"})
_MAX_WRONG_KEPT = 50  # wrong payloads described in full; all are counted
_NUMBER = re.compile(r"(?<![\w.])-?\d+(\.\d+)?(e[-+]?\d+)?|None")
_MAX_KINDS = 20
MAX_WAITING = 200_000  # payloads waiting for truth that could not be fetched yet
FETCH_CONCURRENCY = 16  # truth requests in flight
PAGE = 5000  # truth records per request


class _Comparator(Comparator):
    """`truth.Comparator` for one instrument, able to forget what it has checked and to lose its place."""

    def forget_checked(self) -> None:
        for track in self._tracks.values():
            # Keep the previous payload's state and every one after it: the next ofi sums the steps from it.
            keep = min(track.cursor, track.prev_pos) if track.prev is not None else track.cursor
            # In-place `-=` drops the keys no record holds any more (`subtract` would keep them at 0: one entry
            # per truth record ever fetched).
            track.keys -= collections.Counter(record.key for record in track.records[:keep])
            del track.records[:keep]
            track.cursor -= keep
            track.prev_pos -= keep

    def lost(self, symbol: str) -> None:
        """Payloads of `symbol` went missing: the next one has no known previous state (ofi unverifiable)."""
        track = self._tracks.get(symbol)
        if track is not None:
            track.prev = None
            track.seen_any = False
            track.reset = False

    def buffered(self) -> int:
        return sum(len(track.records) for track in self._tracks.values())


@dataclass
class _Instrument:
    venue: str
    symbol: str
    venue_id: str
    comparator: _Comparator
    since: int = 0  # truth index fetched up to (0: its simulator has kept no truth for it yet)
    # Publish seq of the last payload seen, per topic: each topic counts on its own (the book topic's `seq`,
    # the bars topic's bar seq), so one count across them made up gaps by the hundred million.
    last_seq: dict[str, int] = field(default_factory=dict)
    last_book_seq: object = None  # book_seq of the last VALID book payload checked


@dataclass
class CheckCounts:
    received: int = 0  # payloads received from the bus (every topic)
    book_payloads: int = 0  # trigger "book" payloads
    checked: int = 0  # VALID book payloads compared with the truth
    ofi_checked: int = 0
    unverified: int = 0  # payloads whose ofi had no known previous state (missed payloads, resubscribe)
    restated: int = 0  # a VALID state published again with its flow reset (a snapshot of the same sequence id)
    not_checked: int = 0  # VALID book payloads of venues without usable truth (crossing checked only)
    wrong: int = 0
    crossed: int = 0
    missed: int = 0  # payloads the subscriber never got (publish seq gaps)
    truth_records: int = 0
    truth_gaps: int = 0  # truth evicted before it was fetched (would make checks impossible)
    truth_fetch_errors: int = 0  # truth requests that failed (their payloads wait for the next round)
    first_fetch_error: str | None = None
    waited_out: int = 0  # payloads dropped unchecked after waiting too long for their truth
    interruptions: int = 0
    wrong_by_venue: dict[str, int] = field(default_factory=dict)
    wrong_by_kind: dict[str, int] = field(default_factory=dict)  # the problem's wording, numbers left out
    wrong_examples: list[str] = field(default_factory=list)


class PayloadChecker:
    """Checks the daemon's payloads against the simulators' truth (see the module docstring).

    Args:
        truth_urls: venue -> its simulator's HTTP base URL, for the venues in `TRUTH_VENUES` being served.
        size_factors: venue -> payload symbol -> the venue's size unit in base units, where it is not 1 (OKX
            contracts); the truth is in venue units.
    """

    def __init__(
        self, truth_urls: Mapping[str, str], size_factors: Mapping[str, Mapping[str, float]] | None = None
    ) -> None:
        self.truth_urls = {v: url for v, url in truth_urls.items() if v in TRUTH_VENUES}
        self.size_factors = {venue: dict(factors) for venue, factors in (size_factors or {}).items()}
        self.counts = CheckCounts()
        self._instruments: dict[tuple[str, str], _Instrument] = {}
        self._batch: list[tuple[str, dict[str, Any], bool]] = []

    # -- intake (called for every message the subscription yields) ------------------------------------

    def on_message(self, topic: str, payload: dict[str, Any], snapshot: bool) -> None:
        self.counts.received += 1
        self._batch.append((topic, payload, snapshot))

    def on_interrupted(self) -> None:
        self.counts.interruptions += 1
        for instrument in self._instruments.values():
            instrument.comparator.lost(instrument.symbol)
            instrument.last_seq.clear()

    # -- rounds ----------------------------------------------------------------------------------------

    async def round(self, session: aiohttp.ClientSession) -> None:
        """Fetch the truth new since the last round, then check the payloads received before it started.

        The payloads of an instrument whose truth could not be fetched (its simulator too busy to answer in
        time) wait for the next round, up to `MAX_WAITING` payloads in all (beyond: dropped, their instruments'
        ofi chains broken, counted as `waited_out`)."""
        batch, self._batch = self._batch, []
        for topic, payload, _ in batch:
            self._learn(topic, payload)
        missing = await self._fetch_truth(session)
        waiting: list[tuple[str, dict[str, Any], bool]] = []
        for item in batch:
            topic, payload, snapshot = item
            if (payload.get("venue"), payload.get("symbol")) in missing:
                waiting.append(item)
            else:
                self._check(topic, payload, snapshot)
        if len(waiting) > MAX_WAITING:
            self.counts.waited_out += len(waiting)
            for key in missing:
                self._instruments[key].comparator.lost(key[1])
                self._instruments[key].last_seq.clear()
            waiting = []
        self._batch = waiting + self._batch
        for instrument in self._instruments.values():
            instrument.comparator.forget_checked()

    def _learn(self, topic: str, payload: dict[str, Any]) -> None:
        venue, symbol, venue_id = payload.get("venue"), payload.get("symbol"), payload.get("instrument")
        if not (isinstance(venue, str) and isinstance(symbol, str) and isinstance(venue_id, str)):
            return
        key = (venue, symbol)
        if key not in self._instruments:
            factor = self.size_factors.get(venue, {}).get(symbol)
            comparator = _Comparator(
                {symbol: venue_id},
                {symbol: factor} if factor is not None else None,
                whole_books=venue == "hyperliquid",  # every l2Book push is the whole book (no diffs, no ids)
            )
            self._instruments[key] = _Instrument(venue, symbol, venue_id, comparator)

    async def _fetch_truth(self, session: aiohttp.ClientSession) -> set[tuple[str, str]]:
        """Page in every instrument's new truth, `FETCH_CONCURRENCY` instruments at a time (a busy simulator
        answers each request late, not slowly); the (venue, symbol) keys whose fetch failed."""
        missing: set[tuple[str, str]] = set()
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def fetch(key: tuple[str, str], instrument: _Instrument, url: str) -> None:
            async with gate:
                while True:
                    params = {"instrument": instrument.venue_id, "since": str(instrument.since), "limit": str(PAGE)}
                    try:
                        async with session.get(f"{url}/_flowgauge/truth", params=params) as response:
                            if response.status != 200:
                                raise aiohttp.ClientResponseError(
                                    response.request_info, (), status=response.status, message=await response.text()
                                )
                            body = orjson.loads(await response.read())
                    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                        self.counts.truth_fetch_errors += 1
                        if self.counts.first_fetch_error is None:
                            self.counts.first_fetch_error = f"{instrument.venue_id}: {type(exc).__name__}: {exc}"[:300]
                        missing.add(key)
                        return
                    records = [TruthRecord.from_json(r) for r in body.get("records", ())]
                    if not records:
                        return
                    if records[0].index > instrument.since + 1 and instrument.since:
                        self.counts.truth_gaps += 1
                    instrument.comparator.add_truth(instrument.symbol, records)
                    self.counts.truth_records += len(records)
                    instrument.since = int(body["next"])
                    if len(records) < PAGE:
                        return  # caught up with what was recorded before this answer: that covers the round

        await asyncio.gather(
            *(
                fetch(key, instrument, self.truth_urls[instrument.venue])
                for key, instrument in self._instruments.items()
                if instrument.venue in self.truth_urls
            )
        )
        return missing

    def _check(self, topic: str, payload: dict[str, Any], snapshot: bool) -> None:
        venue, symbol = payload.get("venue"), payload.get("symbol")
        if not (isinstance(venue, str) and isinstance(symbol, str)):
            return
        instrument = self._instruments.get((venue, symbol))
        if instrument is None:
            return
        comparator = instrument.comparator
        if ".status." in topic:
            if payload.get("state") != "VALID":
                comparator.not_valid(instrument.symbol)
            return
        if snapshot:  # a current value replayed on (re)subscribe: out of the live order
            comparator.lost(instrument.symbol)
            instrument.last_seq.pop(topic, None)
            return
        seq = payload.get("seq")
        book_topic = "trigger" in payload  # metrics payloads; bars carry no trigger and break no ofi chain
        if isinstance(seq, int):
            last = instrument.last_seq.get(topic)
            if last is not None and seq != last + 1:
                self.counts.missed += max(0, seq - last - 1)
                if book_topic:
                    comparator.lost(instrument.symbol)
            instrument.last_seq[topic] = seq
        if payload.get("trigger") != "book":
            return
        self.counts.book_payloads += 1
        if payload.get("book_state") != "VALID":
            comparator.not_valid(instrument.symbol)
            return
        bid, ask = payload.get("bid_px"), payload.get("ask_px")
        if isinstance(bid, int | float) and isinstance(ask, int | float) and bid >= ask:
            self.counts.crossed += 1
            self._wrong(venue, f"{venue} {symbol} seq={seq}: crossed book bid {bid} >= ask {ask}")
            return
        if instrument.venue not in self.truth_urls or not instrument.since:
            self.counts.not_checked += 1  # no truth for it (a venue whose simulator does not keep any)
            return
        book_seq = payload.get("book_seq")
        quality = payload.get("quality")
        reset = isinstance(quality, list) and "RESET" in quality
        if payload.get("ofi") is None and (book_seq == instrument.last_book_seq or reset):
            # A state sent whole, its flow reset. Only a snapshot repeats a sequence id (the snapshot of a
            # resubscribe that crossed a venue reset), and a snapshot reaching a VALID book mid-stream (a second
            # resubscribe's answer) is a venue reset the daemon flags RESET (engine._on_snapshot). The truth
            # records messages played, not what each client got on subscribing, so it cannot mark either; the
            # comparator's rule allows a null ofi on a state sent whole. Checked as such, and counted.
            self.counts.restated += 1
            comparator.lost(instrument.symbol)
        instrument.last_book_seq = book_seq
        before = (comparator.checked, comparator.ofi_checked, comparator.unverified_ofi, len(comparator.wrong))
        comparator.check(payload)
        self.counts.checked += comparator.checked - before[0]
        self.counts.ofi_checked += comparator.ofi_checked - before[1]
        self.counts.unverified += comparator.unverified_ofi - before[2]
        for line in comparator.wrong[before[3] :]:
            self._wrong(venue, f"{venue} {line}")
        del comparator.wrong[:]

    def _wrong(self, venue: str, line: str) -> None:
        self.counts.wrong += 1
        self.counts.wrong_by_venue[venue] = self.counts.wrong_by_venue.get(venue, 0) + 1
        for problem in line.partition(": ")[2].split("; "):
            kind = f"{venue}: " + _NUMBER.sub("#", problem)
            if kind in self.counts.wrong_by_kind or len(self.counts.wrong_by_kind) < _MAX_KINDS:
                self.counts.wrong_by_kind[kind] = self.counts.wrong_by_kind.get(kind, 0) + 1
        if len(self.counts.wrong_examples) < _MAX_WRONG_KEPT:
            self.counts.wrong_examples.append(line)

    def buffered(self) -> int:
        """Truth records and payloads held (bounded by one round's worth)."""
        return len(self._batch) + sum(i.comparator.buffered() for i in self._instruments.values())


async def run_rounds(checker: PayloadChecker, every_s: float, stop: asyncio.Event) -> None:
    """Check a round every `every_s` until `stop`, then a last one."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            await checker.round(session)
