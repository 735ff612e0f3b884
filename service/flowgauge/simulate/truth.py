"""Ground truth for the fault tests: what a venue simulator's own book looked like after every message, and a
comparator that checks the daemon's published book payloads against it.

Two halves, both independent of the daemon (no parsers, books or metrics imported; the formulas are written
again from metrics.md):

* `TruthStore` (simulator side): a bounded ring per instrument of the top `depth` levels of each side after
  every book message the simulator applied (withheld and corrupted ones included), keyed by the venue's
  sequence id (or, for a venue without one, the served `ts_exchange`, unique per message). Oldest records are
  evicted first and counted; a record keyed like one still held is counted as `repeated` (the comparator finds
  a payload's state by its key, so a repeated key can match the wrong state: Bybit's `u=1` restarts repeat ids,
  and a venue keyed by time must not). `base.SimulatorServer` serves it as `GET /_flowgauge/truth`: no query gives the
  stats; `instrument=X&seq=N` the latest record keyed N; `instrument=X&since=I[&limit=L]` the records after
  index I in order (`next` is the index to ask from next).
* `Comparator` (test side): fed the truth records in order and the daemon's payloads in publish order, it
  checks every VALID book payload: best bid/ask price and size (exact), `depth_imb_5`/`depth_imb_10` and
  `ofi` (the Cont-Kukanov-Stoikov `e_n` between the previous book payload's state and this one's; tight
  float tolerance; None is right on the first state after the book left VALID, and may be on a state the
  venue sent whole). It assumes one payload per applied book message (`publish.min_interval_ms: 0`,
  `publish.conflate: off`), so consecutive payloads are consecutive book events. Payloads of other triggers
  (ticker, trade) carry the current book's fields too: those are compared as well, and must carry no `ofi`.
"""

from __future__ import annotations

import collections
import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

__all__ = [
    "DEFAULT_TRUTH_CAPACITY",
    "TRUTH_DEPTH",
    "Comparator",
    "TruthRecord",
    "TruthStore",
    "depth_imbalance",
    "fetch_truth",
    "ofi_contribution",
]

TRUTH_DEPTH = 10  # levels per side kept per record
DEFAULT_TRUTH_CAPACITY = 10_000  # records per instrument (about 400 bytes each)
MAX_PAGE = 20_000

Level = tuple[float, float]  # (price, size) in the venue's own units


@dataclass(frozen=True, slots=True)
class TruthRecord:
    index: int  # position in the instrument's record stream (1, 2, ...), never reused
    key: int  # sequence id (or exchange time in ms, for venues without one)
    ts: int | None  # served exchange time, ms
    bids: tuple[Level, ...]  # best first
    asks: tuple[Level, ...]
    snapshot: bool = False  # the venue sent this state whole (a reset: no order flow across it)

    def as_json(self) -> dict[str, Any]:
        return {
            "i": self.index, "key": self.key, "ts": self.ts, "bids": self.bids, "asks": self.asks,
            "snapshot": self.snapshot,
        }  # fmt: skip

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TruthRecord:
        return cls(
            int(obj["i"]),
            int(obj["key"]),
            obj.get("ts"),
            tuple((float(p), float(s)) for p, s in obj["bids"]),
            tuple((float(p), float(s)) for p, s in obj["asks"]),
            bool(obj.get("snapshot", False)),
        )


class _Ring:
    __slots__ = ("evicted", "latest", "next_index", "records", "repeated")

    def __init__(self, capacity: int) -> None:
        # (index, key, ts, n_bids (negative: a snapshot), levels as [px, sz, ...] bids then asks)
        self.records: collections.deque[tuple[int, int, int | None, int, array[float]]] = collections.deque(
            maxlen=capacity
        )
        self.latest: dict[int, int] = {}  # key -> index of its latest record
        self.next_index = 1
        self.evicted = 0
        self.repeated = 0  # records keyed like one still held: a payload's key no longer says which state it is


class TruthStore:
    """Bounded per-instrument rings of the simulator's book after every applied message (see module doc)."""

    def __init__(self, capacity: int = DEFAULT_TRUTH_CAPACITY, depth: int = TRUTH_DEPTH) -> None:
        if capacity < 0:
            raise ValueError("truth capacity must be >= 0")
        self.capacity = capacity
        self.depth = depth
        self._rings: dict[str, _Ring] = {}

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def record(
        self,
        instrument: str,
        key: int,
        ts_ms: int | None,
        bids: Iterable[Level],
        asks: Iterable[Level],
        snapshot: bool = False,
    ) -> None:
        """Store the book of `instrument` after the message keyed `key`; `bids`/`asks` best first (only the
        first `depth` of each are kept); `snapshot` when the venue sent this state whole (a reset)."""
        if self.capacity <= 0:
            return
        ring = self._rings.get(instrument)
        if ring is None:
            ring = self._rings[instrument] = _Ring(self.capacity)
        flat: array[float] = array("d")
        n_bids = 0
        for px, sz in bids:
            if n_bids == self.depth:
                break
            flat.append(px)
            flat.append(sz)
            n_bids += 1
        for n_asks, (px, sz) in enumerate(asks):
            if n_asks == self.depth:
                break
            flat.append(px)
            flat.append(sz)
        records = ring.records
        if len(records) == records.maxlen:
            old = records[0]
            ring.evicted += 1
            if ring.latest.get(old[1]) == old[0]:
                del ring.latest[old[1]]
        if key in ring.latest:
            ring.repeated += 1
        index = ring.next_index
        ring.next_index += 1
        records.append((index, key, ts_ms, ~n_bids if snapshot else n_bids, flat))
        ring.latest[key] = index

    def _make(self, item: tuple[int, int, int | None, int, array[float]]) -> TruthRecord:
        index, key, ts, n_bids, flat = item
        snapshot = n_bids < 0
        if snapshot:
            n_bids = ~n_bids
        levels = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        return TruthRecord(index, key, ts, tuple(levels[:n_bids]), tuple(levels[n_bids:]), snapshot)

    def holds(self, instrument: str, key: int) -> bool:
        """Whether a record keyed `key` is still in the ring (a simulator keeping keys unique asks first)."""
        ring = self._rings.get(instrument)
        return ring is not None and key in ring.latest

    def get(self, instrument: str, key: int) -> TruthRecord | None:
        """The latest record keyed `key` still in the ring."""
        ring = self._rings.get(instrument)
        if ring is None or key not in ring.latest:
            return None
        index = ring.latest[key]
        first = ring.records[0][0]
        return self._make(ring.records[index - first])

    def since(self, instrument: str, index: int, limit: int = MAX_PAGE) -> list[TruthRecord]:
        """Records with an index above `index`, oldest first, at most `limit`."""
        ring = self._rings.get(instrument)
        if ring is None or not ring.records:
            return []
        first = ring.records[0][0]
        start = max(0, index + 1 - first)
        stop = min(len(ring.records), start + max(0, min(limit, MAX_PAGE)))
        return [self._make(ring.records[i]) for i in range(start, stop)]

    def stats(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "depth": self.depth,
            "instruments": {
                name: {
                    "records": len(ring.records),
                    "evicted": ring.evicted,
                    "repeated": ring.repeated,
                    "first": ring.records[0][0] if ring.records else None,
                    "last": ring.next_index - 1,
                }
                for name, ring in self._rings.items()
            },
        }

    def answer(self, query: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for `GET /_flowgauge/truth` with `query` (see module doc)."""
        instrument = query.get("instrument")
        if instrument is None:
            return 200, self.stats()
        try:
            if "seq" in query:
                found = self.get(instrument, int(query["seq"]))
                if found is None:
                    return 404, {"error": f"no truth for {instrument} seq {query['seq']} (evicted or never seen)"}
                return 200, found.as_json()
            since = int(query.get("since", "0"))
            limit = int(query.get("limit", str(MAX_PAGE)))
        except ValueError:
            return 400, {"error": "seq, since and limit must be integers"}
        records = self.since(instrument, since, limit)
        ring = self._rings.get(instrument)
        return 200, {
            "instrument": instrument,
            "records": [r.as_json() for r in records],
            "next": records[-1].index if records else since,
            "evicted": ring.evicted if ring is not None else 0,
        }


async def fetch_truth(http_url: str, instrument: str) -> tuple[list[TruthRecord], int]:
    """Every record of `instrument` a simulator at `http_url` still holds, oldest first, and its eviction
    count (test side; pages through `since`)."""
    import aiohttp

    out: list[TruthRecord] = []
    since = 0
    evicted = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while True:
            params = {"instrument": instrument, "since": str(since)}
            async with session.get(f"{http_url}/_flowgauge/truth", params=params) as response:
                response.raise_for_status()
                body = await response.json()
            page = [TruthRecord.from_json(r) for r in body["records"]]
            evicted = int(body["evicted"])
            if not page:
                return out, evicted
            out.extend(page)
            since = int(body["next"])


# --------------------------------------------------------------------------------------------------
# The comparator (metrics.md §1.1 and the depth imbalance, written again here on purpose)


def depth_imbalance(bids: Sequence[Level], asks: Sequence[Level], n: int, size_factor: float = 1.0) -> float | None:
    """`(sum bid size - sum ask size) / (sum bid + sum ask)` over the best `n` levels of each side; None when
    both are empty. Sizes are summed best first, one at a time."""
    bid_sum = 0.0
    for _, sz in bids[:n]:
        bid_sum += sz * size_factor
    ask_sum = 0.0
    for _, sz in asks[:n]:
        ask_sum += sz * size_factor
    total = bid_sum + ask_sum
    return (bid_sum - ask_sum) / total if total > 0.0 else None


Top = tuple[float, float, float, float]  # bid px, bid size, ask px, ask size (empty side: -inf/+inf, 0)


def top_of(record: TruthRecord, size_factor: float = 1.0) -> Top:
    bid_px, bid_sz = record.bids[0] if record.bids else (-math.inf, 0.0)
    ask_px, ask_sz = record.asks[0] if record.asks else (math.inf, 0.0)
    return bid_px, bid_sz * size_factor, ask_px, ask_sz * size_factor


def ofi_contribution(prev: Top, new: Top) -> float:
    """Cont-Kukanov-Stoikov `e_n` as metrics.md §1.1's case table: bid improves +q_new, same price +dq,
    retreats -q_old; the ask side mirrored with the opposite sign."""
    pb0, qb0, pa0, qa0 = prev
    pb1, qb1, pa1, qa1 = new
    if pb1 > pb0:
        bid = qb1
    elif pb1 == pb0:
        bid = qb1 - qb0
    else:
        bid = -qb0
    if pa1 < pa0:
        ask = -qa1
    elif pa1 == pa0:
        ask = qa0 - qa1
    else:
        ask = qa0
    return bid + ask


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@dataclass(slots=True)
class _Track:
    records: list[TruthRecord] = field(default_factory=list)
    keys: collections.Counter[int] = field(default_factory=collections.Counter)  # records held per key
    cursor: int = 0  # records before this one are behind the payloads already matched
    prev: TruthRecord | None = None  # the state of the previous VALID book payload
    prev_pos: int = 0  # its position in `records`
    seen_any: bool = False
    reset: bool = False  # a non-VALID state was seen since `prev`


class Comparator:
    """Checks the daemon's book payloads against the truth, in publish order (see module doc).

    Args:
        instruments: payload `symbol` (e.g. "BTC/USDT:USDT") -> the simulator's instrument (e.g. "BTCUSDT").
        size_factor: per payload symbol, venue size units -> the payload's base units (1 for linear USDT).
        whole_books: the venue streams whole books, no diffs (Hyperliquid): `ofi` is e_n between the previous
            payload's state and this one's, the books the client held, not summed over states it never got.
    """

    def __init__(
        self,
        instruments: Mapping[str, str],
        size_factor: Mapping[str, float] | None = None,
        *,
        whole_books: bool = False,
    ) -> None:
        self.instruments = dict(instruments)
        self.whole_books = whole_books
        self.size_factor = dict(size_factor or {})
        self._tracks: dict[str, _Track] = {symbol: _Track() for symbol in instruments}
        self.checked = 0  # payloads with a VALID book compared (any trigger)
        self.ofi_checked = 0  # ... whose ofi was compared too
        self.unverified_ofi = 0  # first payload seen with an ofi whose previous state we never saw
        self.ofi_multi = 0  # ofi compared over more than one truth step (states the daemon published no payload of)
        self.untracked = 0  # payloads of a symbol not in `instruments`: never compared, the caller asserts 0
        self.wrong: list[str] = []  # one line per wrong payload

    def add_truth(self, symbol: str, records: Iterable[TruthRecord]) -> None:
        track = self._tracks[symbol]
        start = len(track.records)
        track.records.extend(records)
        track.keys.update(record.key for record in track.records[start:])

    def not_valid(self, symbol: str) -> None:
        """The book of `symbol` left VALID (a status or payload said so): its next state has no previous."""
        track = self._tracks.get(symbol)
        if track is not None:
            track.prev = None
            track.reset = True

    def check(self, payload: Mapping[str, Any]) -> bool:
        """Compare one payload (non-book and non-VALID ones only move the state); False if it is wrong."""
        symbol = payload.get("symbol")
        track = self._tracks.get(symbol) if isinstance(symbol, str) else None
        if track is None:
            self.untracked += 1
            return True
        book_event = payload.get("trigger") == "book"
        if payload.get("book_state") != "VALID":
            if book_event:
                self.not_valid(symbol)  # type: ignore[arg-type]
            return True
        seq = payload.get("book_seq")
        record = self._find(track, seq, payload.get("ts_exchange"))
        factor = self.size_factor.get(symbol, 1.0)  # type: ignore[arg-type]
        self.checked += 1
        if record is None:
            return self._wrong(payload, f"no truth record for book_seq {seq}")
        problems = []
        top = top_of(record, factor)
        for name, want in zip(("bid_px", "bid_sz", "ask_px", "ask_sz"), top, strict=True):
            have = payload.get(name)
            if math.isinf(want) or (name.endswith("_sz") and want == 0.0 and have is None):
                want_value: float | None = None
            else:
                want_value = want
            if have != want_value:
                problems.append(f"{name} {have} != {want_value}")
        for n in (5, 10):
            want_imb = depth_imbalance(record.bids, record.asks, n, factor)
            have_imb = payload.get(f"depth_imb_{n}")
            if (want_imb is None) != (have_imb is None) or (
                want_imb is not None and not _close(float(have_imb), want_imb)  # type: ignore[arg-type]
            ):
                problems.append(f"depth_imb_{n} {have_imb} != {want_imb}")
        ofi = payload.get("ofi")
        if not book_event:
            # Another trigger (ticker, trade, ...) carries the current book's fields but no order flow.
            if ofi is not None:
                problems.append(f"ofi {ofi} on a {payload.get('trigger')} payload (want None)")
            if problems:
                return self._wrong(payload, "; ".join(problems))
            return True
        if record.snapshot and ofi is None:
            pass  # a state the venue sent whole resets the flow (venues streaming snapshots only keep it)
        elif track.prev is not None:
            # metrics.md §1.2: the flow over (previous payload, this one] is the sum of e_n over every truth state
            # in between, not e_n between the two end states (they differ once the top moved and came back).
            steps = track.records[track.prev_pos : track.cursor + 1]
            if self.whole_books:
                # A venue streaming whole books (Hyperliquid): the flow runs from the last book the client holds,
                # the previous payload's. A book in between that never reached it, or that it refused as older
                # than the one it holds, leaves nothing a client could sum over.
                steps = [track.prev, record]
            elif not steps or steps[0] is not track.prev:
                problems.append(f"truth steps since book_seq {track.prev.key} no longer held (ofi not checkable)")
                steps = [track.prev, record]
            want_ofi = sum(ofi_contribution(top_of(a, factor), top_of(b, factor)) for a, b in pairwise(steps))
            if len(steps) > 2:
                self.ofi_multi += 1
            self.ofi_checked += 1
            if ofi is None or not _close(float(ofi), want_ofi):
                problems.append(f"ofi {ofi} != {want_ofi} (from book_seq {track.prev.key})")
        elif ofi is not None:
            if track.seen_any or track.reset:
                problems.append(f"ofi {ofi} on the first state after the book left VALID (want None)")
            else:
                self.unverified_ofi += 1
        track.prev = record
        track.prev_pos = track.cursor
        track.seen_any = True
        track.reset = False
        if problems:
            return self._wrong(payload, "; ".join(problems))
        return True

    def _find(self, track: _Track, seq: object, ts_exchange_ns: object = None) -> TruthRecord | None:
        """The first record keyed `seq` from the cursor on. Where the key is held more than once (Bybit's `u=1`
        restarts start the ids again, so a book the daemon did not publish for a whole restart period leaves the
        same id ahead twice), the one whose exchange time is nearest the payload's: a venue message is its id and
        its time, and two restarts are seconds apart."""
        if not isinstance(seq, int):
            return None
        records = track.records
        found = -1
        for i in range(track.cursor, len(records)):
            if records[i].key == seq:
                found = i
                break
        if found < 0:
            return None
        if track.keys[seq] > 1 and isinstance(ts_exchange_ns, int):
            want_ms = ts_exchange_ns / 1e6
            first_ts = records[found].ts
            best = abs(first_ts - want_ms) if first_ts is not None else math.inf
            for i in range(found + 1, len(records)):
                record = records[i]
                if record.key == seq and record.ts is not None and abs(record.ts - want_ms) < best:
                    found, best = i, abs(record.ts - want_ms)
        track.cursor = found
        return records[found]

    def _wrong(self, payload: Mapping[str, Any], why: str) -> bool:
        self.wrong.append(f"{payload.get('symbol')} seq={payload.get('seq')} book_seq={payload.get('book_seq')}: {why}")
        return False
