"""Offline replay: recorded frames through the same parsers and engine the daemon runs live.

Frames are tied to connections by `conn`, and each connection's `connect` URL picks the parser
(Bybit spot and linear share topic names, so the URL is the only way to tell them apart).
Instrument metadata comes from the recording's own REST lines, parsed by ccxt. Exchange time
drives every metric, so the same input yields the same output (`ts_publish` aside).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flowgauge.config import default_book_depth
from flowgauge.connectors import registry
from flowgauge.connectors.base import PollRequest, VenueParser
from flowgauge.connectors.markets import MarketsError, instrument_from_market, markets_from_recording
from flowgauge.engine import Engine, Sink
from flowgauge.recording import Connect, Header, Http, Recv, iter_records
from flowgauge.types import Instrument, InvalidReason

log = logging.getLogger(__name__)

# Recording `exchange` names (cryptofeed's) -> ccxt exchange ids.
EXCHANGE_IDS = {
    "BYBIT": "bybit",
    "BINANCE_FUTURES": "binanceusdm",
    "OKX": "okx",
    "DERIBIT": "deribit",
    "HYPERLIQUID": "hyperliquid",
}


class ReplayError(RuntimeError):
    """The recording cannot be replayed (unknown venue, no instrument metadata, unreadable file)."""


@dataclass
class ReplayStats:
    frames: int = 0
    frames_ignored: int = 0  # frames on connections we do not parse (spot, unknown)
    published: int = 0
    resyncs_needed: int = 0  # books left wrong by the recording (a gap it never resolved)
    per_topic: dict[str, int] = field(default_factory=dict)


class _FileReplay:
    """State of one recording being replayed into a shared engine."""

    def __init__(self, path: Path, engine: Engine, symbols: dict[str, Sequence[str]] | None) -> None:
        self.path = path
        self.engine = engine
        self.symbols = symbols
        self.venue: str | None = None
        self.adapter: Any = None
        self.http: list[tuple[str, str]] = []
        self.instruments: list[Instrument] | None = None
        self.parsers: dict[str, VenueParser | None] = {}
        self.polls: list[PollRequest] = []
        self.by_symbol: dict[str, Instrument] = {}
        self.tracked: set[str] = set()  # symbols already seen (added to the engine if they are ours)
        self.early_snapshots: list[Http] = []  # REST snapshots recorded before any connection opened

    def set_venue(self, venue: str) -> None:
        self.venue = venue
        try:
            self.adapter = registry.adapter(venue)
        except (KeyError, ImportError) as exc:
            raise ReplayError(f"{self.path}: venue {venue!r} cannot be replayed: {exc}") from exc

    def _load_instruments(self) -> None:
        venue = self._require_venue()
        wanted = None if self.symbols is None else set(self.symbols.get(venue, ()))
        # A venue module may know better than ccxt-over-recorded-REST (Hyperliquid's REST is POST
        # bodies that recordings do not keep): it then provides instruments_from_recording.
        custom = getattr(importlib.import_module(type(self.adapter).__module__), "instruments_from_recording", None)
        instruments = []
        if custom is not None:
            candidates = list(custom(self.http, sorted(wanted) if wanted is not None else None))
        else:
            try:
                markets = markets_from_recording(venue, self.http)
            except MarketsError as exc:
                raise ReplayError(f"{self.path}: {exc}") from exc
            candidates = [instrument_from_market(venue, market) for market in markets]
        for instrument in candidates:
            if not instrument.derivative:
                continue
            if wanted is not None and instrument.symbol not in wanted:
                continue
            instruments.append(instrument)
        if not instruments:
            raise ReplayError(f"{self.path}: no derivative instruments in the recording's REST metadata")
        self.instruments = instruments
        self.by_symbol = {instrument.symbol: instrument for instrument in instruments}
        self.polls = list(self.adapter.polls(instruments))

    def _require_venue(self) -> str:
        if self.venue is None:
            raise ReplayError(f"{self.path}: no header line naming the exchange")
        return self.venue

    def on_connect(self, record: Connect, stats: ReplayStats) -> None:
        if self.instruments is None:
            self._load_instruments()
        assert self.instruments is not None
        parser = replay_parser(self.adapter, record.addr, self.instruments)
        if parser is not None:
            # A new connection in the recording is a reconnect as far as its books go: as live, the books
            # it will carry restart from its snapshots (the sync machine then bridges buffered deltas).
            books = getattr(parser, "book_symbols", [i.symbol for i in parser.instruments.values()])
            known = [s for s in books if self.engine.state(self.venue or "", s) is not None]
            if known:
                self.engine.invalidate(self.venue or "", known, InvalidReason.RESET, "reconnect in recording")
        self.parsers[record.conn] = parser
        if parser is None or not self.early_snapshots:
            return
        # Some recorders fetched REST snapshots before opening the websocket: hand them to the parser
        # that carries the instrument now (the sync machine bridges them to the deltas that follow).
        for early in list(self.early_snapshots):
            if self._deliver_snapshot(early, parser, stats):
                self.early_snapshots.remove(early)

    def on_http(self, record: Http, stats: ReplayStats) -> None:
        """REST answers after start-up: book snapshots go to the parser, poll answers to the adapter."""
        if self.instruments is None:
            self.http.append((record.url, record.data))
            if _is_snapshot_path(urlsplit(record.url).path):
                self.early_snapshots.append(record)
            return
        ts_recv = int(record.ts * 1e9)
        parts = urlsplit(record.url)
        query = dict(parse_qsl(parts.query))
        for parser in {id(p): p for p in self.parsers.values() if p is not None}.values():
            if self._deliver_snapshot(record, parser, stats):
                return
        for poll in self.polls:
            if poll.path == parts.path and all(query.get(k) == v for k, v in poll.params.items()):
                self._handle(self.adapter.parse_poll(poll, record.data, ts_recv), None, stats)
                return

    def _deliver_snapshot(self, record: Http, parser: VenueParser, stats: ReplayStats) -> bool:
        parts = urlsplit(record.url)
        if not _is_snapshot_path(parts.path):
            return False
        query = dict(parse_qsl(parts.query))
        venue_id = query.get("symbol") or query.get("instId") or query.get("instrument_name") or ""
        instrument = parser.instruments.get(venue_id)
        if instrument is None or not getattr(parser, "carries_books", True):
            return False
        self._handle(parser.on_snapshot(instrument.symbol, record.data, int(record.ts * 1e9)), parser, stats)
        return True

    def on_recv(self, record: Recv, stats: ReplayStats) -> None:
        parser = self.parsers.get(record.conn)
        if parser is None:
            stats.frames_ignored += 1
            return
        self._handle(parser.feed(record.data, int(record.ts * 1e9)), parser, stats)

    def _handle(self, events: Iterable[object], parser: VenueParser | None, stats: ReplayStats) -> None:
        engine = self.engine
        adapter = self.adapter
        for item in events:
            if isinstance(item, str):
                continue  # a reply the live session would send (heartbeat answer): nothing to do offline
            symbol = getattr(item, "symbol", None)
            if symbol is not None and symbol not in self.tracked:
                # Instruments join the engine when the recording first mentions them.
                self.tracked.add(symbol)
                instrument = self.by_symbol.get(symbol)
                if instrument is not None:
                    engine.add_instrument(instrument, adapter.sequence_rule, adapter.buffer_deltas)
            resync = engine.handle(item)
            if resync is not None:
                stats.resyncs_needed += 1


# REST paths that answer with a book snapshot, per venue protocol.
_SNAPSHOT_PATHS = ("/fapi/v1/depth", "/api/v5/market/books", "/v5/market/orderbook")


def _is_snapshot_path(path: str) -> bool:
    return path.rstrip("/").endswith(_SNAPSHOT_PATHS)


def replay_parser(adapter: Any, url: str, instruments: Sequence[Instrument]) -> VenueParser | None:
    """The parser a live connection to `url` would have had; None for streams we do not track (spot)."""
    custom = getattr(adapter, "replay_parser", None)
    if custom is not None:
        return custom(url, instruments)  # type: ignore[no-any-return]
    depth = default_book_depth(adapter.venue)
    connections = adapter.connections(instruments, url, depth)
    for conn_url, parser in connections:
        if conn_url == url:
            return parser  # type: ignore[no-any-return]
    return connections[0][1] if connections else None


def replay(
    paths: Sequence[str | Path],
    sink: Sink,
    *,
    speed: float = 0.0,
    symbols: dict[str, Sequence[str]] | None = None,
    clock: Callable[[], int] = time.time_ns,
) -> tuple[Engine, ReplayStats]:
    """Replay recordings in order into one engine publishing to `sink`.

    Args:
        paths: recording files (`.jsonl.zst` or `.jsonl`).
        sink: `sink(topic, payload_bytes)` for every published message.
        speed: 0 = as fast as possible, 1 = recorded pace, N = N times faster.
        symbols: venue -> unified symbols to keep; None keeps every derivative instrument.
    """
    stats = ReplayStats()

    def counting_sink(topic: str, payload: bytes) -> None:
        stats.published += 1
        stats.per_topic[topic] = stats.per_topic.get(topic, 0) + 1
        sink(topic, payload)

    engine = Engine(counting_sink, clock=clock)
    for path in paths:
        state = _FileReplay(Path(path), engine, symbols)
        first_ts: float | None = None
        wall_start = time.monotonic()
        for record in iter_records(path):
            if isinstance(record, Header):
                venue = EXCHANGE_IDS.get(record.exchange)
                if venue is None:
                    raise ReplayError(f"{path}: unknown exchange {record.exchange!r}")
                state.set_venue(venue)
            elif isinstance(record, Http):
                state.on_http(record, stats)
            elif isinstance(record, Connect):
                state.on_connect(record, stats)
            elif isinstance(record, Recv):
                stats.frames += 1
                if speed > 0:
                    if first_ts is None:
                        first_ts = record.ts
                    due = (record.ts - first_ts) / speed - (time.monotonic() - wall_start)
                    if due > 0:
                        time.sleep(due)
                state.on_recv(record, stats)
    return engine, stats
