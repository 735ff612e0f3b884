"""Real frames per venue as fuzzing seeds, and a harness that feeds frames the way the daemon does.

`venue_case(venue)` reads the venue's fixture recording once: its instrument metadata (through the replay's
own loader), the first connection that carries books, the frames and REST snapshots recorded on it. Those are
split into a prime (the frames up to the point where the books are VALID), a continuation (the real frames
after it) and seeds (a few frames of every kind the recording holds, excerpts copied for mutation).

`Harness` is one connection's parser and a fresh engine, fed as `feeds.VenueFeed.on_frame` feeds them: the
parser turns one frame into events and answers, the engine applies the events and names books to resync,
and a resync's `FetchSnapshot` is answered with a REST body (real or mutated) through `on_snapshot`. Every
payload the engine publishes is checked as it leaves (`PublishedBookChecker`).
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from flowgauge.connectors.base import FetchSnapshot
from flowgauge.engine import Engine
from flowgauge.recording import Connect, Header, Http, Recv, iter_records
from flowgauge.replay.replay import (
    EXCHANGE_IDS,
    ReplayStats,
    _Connections,
    _FileReplay,
    _is_snapshot_path,
    replay_parser,
)
from flowgauge.types import Instrument

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDINGS = {
    "bybit": FIXTURES / "bybit" / "bybit-linear-2026-08.jsonl.zst",
    "binanceusdm": FIXTURES / "binanceusdm" / "binance-usdm-2021-07.jsonl.zst",
    "okx": FIXTURES / "okx" / "okx-v5-2022-05.jsonl.zst",
    "deribit": FIXTURES / "deribit" / "deribit-2021-07.jsonl.zst",
    "hyperliquid": FIXTURES / "hyperliquid" / "hyperliquid-btc-2025-01.jsonl.zst",
}
VENUES = tuple(RECORDINGS)
# Best-quote frames (issue 11 item 1) for the venues whose recordings hold none: seeds too (Binance's recording has
# its bookTicker frames). Deribit's are for an instrument its recording lacks: they reach the parser's lookup.
BEST_QUOTE_SEEDS: dict[str, list[str]] = json.loads((FIXTURES / "best_quote" / "venue-frames.json").read_text())

PRIME_SCAN = 400  # frames searched for the point where the most books are VALID
CONTINUATION = 16  # real frames after the prime: the stream the fuzzer mutates
SEEDS_PER_KIND = 3


@dataclass(frozen=True)
class Op:
    """One recorded input of the connection: a websocket frame, or a REST snapshot body for `symbol`."""

    data: str | bytes
    ts: int
    symbol: str | None = None  # set for a REST snapshot


@dataclass
class VenueCase:
    venue: str
    adapter: Any
    url: str
    instruments: list[Instrument]
    prime: list[Op]
    continuation: list[Op]
    frame_seeds: list[str]
    snapshot_seeds: dict[str, list[str]]  # symbol -> REST snapshot bodies
    typed_errors: tuple[type[Exception], ...]

    def new_parser(self) -> Any:
        return replay_parser(self.adapter, self.url, self.instruments)


def _kind(data: str | bytes) -> str:
    """What kind of frame this is (channel, event type, action), digits stripped: seeds cover every kind."""
    try:
        doc = json.loads(data)
    except ValueError:
        return "not-json"
    if not isinstance(doc, dict):
        return type(doc).__name__
    parts: list[str] = []
    for node in (doc, doc.get("data"), doc.get("params"), doc.get("arg")):
        if isinstance(node, dict):
            for key in ("topic", "channel", "stream", "method", "e", "type", "action"):
                value = node.get(key)
                if isinstance(value, str):
                    parts.append(f"{key}={value}")
    parts.append(",".join(sorted(doc)))
    return re.sub(r"\d+", "#", "|".join(parts))


@functools.cache
def venue_case(venue: str) -> VenueCase:
    path = RECORDINGS[venue]
    probe = Engine(lambda topic, payload: None, clock=lambda: 0)
    stats = ReplayStats()
    loader = _FileReplay(path, probe, None, _Connections())
    conn: str | None = None
    url = ""
    recorded: list[Op | Http] = []
    early: list[Http] = []
    for record in iter_records(path):
        if isinstance(record, Header):
            loader.set_venue(EXCHANGE_IDS[record.exchange])
        elif isinstance(record, Http):
            if _is_snapshot_path(urlsplit(record.url).path):
                # Some recorders fetched snapshots before connecting: as in replay, they apply at the connect.
                (recorded if conn is not None else early).append(record)
            elif loader.instruments is None:
                loader.on_http(record, stats)  # instrument metadata
        elif isinstance(record, Connect):
            loader.on_connect(record, stats)
            if conn is None and loader.parsers.get(record.conn) is not None:
                conn, url = record.conn, record.addr
                recorded.extend(early)
        elif isinstance(record, Recv) and record.conn == conn:
            recorded.append(Op(record.data, int(record.ts * 1e9)))
    assert conn is not None and loader.instruments, f"{path}: no parsed connection"
    ops = [op for op in (_snapshot_op(r, loader.instruments) if isinstance(r, Http) else r for r in recorded) if op]
    module = __import__(type(loader.adapter).__module__, fromlist=["FrameError"])
    typed = tuple(
        value for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == module.__name__
    )  # fmt: skip
    case = VenueCase(
        venue=venue,
        adapter=loader.adapter,
        url=url,
        instruments=list(loader.instruments),
        prime=[],
        continuation=[],
        frame_seeds=[],
        snapshot_seeds={},
        typed_errors=typed,
    )
    # The prime ends where the most books first became VALID within the scanned frames.
    harness = Harness(case, core_name=None)
    best, best_at = 0, 0
    for n, op in enumerate(ops[:PRIME_SCAN]):
        harness.op(op)
        valid = harness.valid_books()
        if valid > best:
            best, best_at = valid, n
    assert best > 0, f"{venue}: no book became VALID in the first {PRIME_SCAN} frames"
    case.prime = ops[: best_at + 1]
    case.continuation = ops[best_at + 1 : best_at + 1 + CONTINUATION]
    per_kind: dict[str, int] = {}
    for op in ops:
        if op.symbol is not None:
            case.snapshot_seeds.setdefault(op.symbol, []).append(_text(op.data))
            continue
        kind = _kind(op.data)
        if per_kind.get(kind, 0) < SEEDS_PER_KIND:
            per_kind[kind] = per_kind.get(kind, 0) + 1
            case.frame_seeds.append(_text(op.data))
    case.frame_seeds += BEST_QUOTE_SEEDS.get(venue, [])
    return case


def _snapshot_op(record: Http, instruments: list[Instrument]) -> Op | None:
    query = dict(parse_qsl(urlsplit(record.url).query))
    venue_id = query.get("symbol") or query.get("instId") or query.get("instrument_name") or ""
    instrument = next((i for i in instruments if i.venue_id == venue_id), None)
    return None if instrument is None else Op(record.data, int(record.ts * 1e9), instrument.symbol)


def _text(data: str | bytes) -> str:
    return data if isinstance(data, str) else data.decode()


class PublishedBookChecker:
    """The sink: every book payload is checked against the engine's own payload mapping before encoding
    (`state.latest`, set just before the sink is called), because encoding turns NaN and infinities into
    null and would hide them."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.book_payloads = 0
        self.valid_book_payloads = 0
        self.statuses = 0

    def __call__(self, topic: str, payload: bytes) -> None:
        doc = orjson.loads(payload)
        if ".status." in topic:
            self.statuses += 1
            assert doc["state"] in ("VALID", "INVALID", "SYNCING", "RETIRED"), doc
            return
        if ".trades." in topic:
            assert 0.0 < doc["price"] < math.inf and 0.0 < doc["size"] < math.inf, doc
            return
        assert self.engine is not None
        state = self.engine.state(doc["venue"], doc["symbol"])
        assert state is not None and state.latest is not None and state.latest["seq"] == doc["seq"]
        not_finite = {k: v for k, v in state.latest.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not not_finite, f"published non-finite values {not_finite} in {doc}"
        self.book_payloads += 1
        if doc["book_state"] != "VALID":
            assert doc["bid_px"] is None and doc["ask_px"] is None, f"book fields of a non-VALID book: {doc}"
            return
        self.valid_book_payloads += 1
        bid, ask = doc["bid_px"], doc["ask_px"]
        if bid is not None and ask is not None:
            assert bid < ask, f"crossed book published: bid {bid} >= ask {ask} in {doc}"
        for side in (state.sync.book.bids, state.sync.book.asks):
            for price, size in side.levels():
                assert 0.0 < price < math.inf and 0.0 <= size < math.inf, f"bad level {price} {size} in {doc}"


@dataclass
class Harness:
    """One connection's parser and a fresh engine over `core_name` (None: the active core)."""

    case: VenueCase
    core_name: str | None
    checker: PublishedBookChecker = field(default_factory=PublishedBookChecker)
    typed_errors_seen: int = 0
    snapshot_requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.parser = self.case.new_parser()
        self.engine = Engine(self.checker, clock=lambda: 0, core_name=self.core_name)
        self.checker.engine = self.engine
        for instrument in self.case.instruments:
            self.engine.add_instrument(instrument, self.case.adapter.sequence_rule, self.case.adapter.buffer_deltas)
        self.parser.on_connected()
        self.ts = 0

    def op(self, op: Op) -> None:
        if op.symbol is None:
            self.frame(op.data, op.ts)
        else:
            self.snapshot(op.symbol, op.data, op.ts)

    def frame(self, raw: str | bytes, ts: int | None = None) -> None:
        """`VenueFeed.on_frame`: parse, apply, resync. Only the venue module's own exceptions may leave the
        parser; nothing may leave the engine."""
        ts = self._stamp(ts)
        try:
            out = self.parser.feed(raw, ts)
        except self.case.typed_errors:
            self.typed_errors_seen += 1
            return
        assert isinstance(out, list), f"feed returned {type(out).__name__}"
        events = [item for item in out if not isinstance(item, str)]
        self._apply(events, ts)

    def snapshot(self, symbol: str, body: str | bytes, ts: int | None = None) -> None:
        """A REST snapshot answer, as the REST scheduler hands it to the parser."""
        ts = self._stamp(ts)
        try:
            events = self.parser.on_snapshot(symbol, body, ts)
        except self.case.typed_errors:
            self.typed_errors_seen += 1
            return
        self._apply(events, ts)

    def _apply(self, events: list[Any], ts: int) -> None:
        for symbol in self.engine.handle_all(events):
            for action in self.parser.resync(symbol):
                if isinstance(action, FetchSnapshot):
                    self.snapshot_requests.append(action.symbol)
                else:
                    assert isinstance(action, str)

    def _stamp(self, ts: int | None) -> int:
        self.ts = max(self.ts + 1, ts or 0)
        return self.ts

    def valid_books(self) -> int:
        return sum(1 for state in self.engine.states() if state.sync.valid)
