"""Offline replay: recorded frames through the same parsers and engine the daemon runs live.

Frames are tied to connections by `conn`, and each connection's `connect` URL picks the parser
(Bybit spot and linear share topic names, so the URL is the only way to tell them apart).
Instrument metadata comes from the recording's own REST lines, parsed by ccxt. Exchange time
drives every metric, so the same input yields the same output (`ts_publish` aside).

Several files replay into one engine, in the order given (a recorder's rotated files continue each
other). A new connection is a reconnect for the books an earlier one carried, as live; the connect
lines a rotated file repeats are not. A file that cannot be replayed (unreadable, corrupt, unknown
exchange, no metadata) is reported through `on_file_error` and the next file goes on.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flowgauge.config import default_book_depth
from flowgauge.connectors import registry
from flowgauge.connectors.base import PollRequest, VenueParser
from flowgauge.connectors.markets import MarketsError, instrument_from_market, markets_from_recording
from flowgauge.engine import DEFAULT_CLOCK_SKEW_MAX_S, Engine, Sink
from flowgauge.metrics.aggregate import CrossVenueAggregates
from flowgauge.metrics.bar_feed import BarSpec
from flowgauge.metrics.families import DEFAULT_FAMILIES
from flowgauge.metrics.params import MetricParams
from flowgauge.recording import (
    EXCHANGE_VENUES,
    MARKETS_CONN,
    Connect,
    Header,
    Http,
    ReadStats,
    RecordingError,
    Recv,
    iter_records,
)
from flowgauge.types import Instrument, InvalidReason

log = logging.getLogger(__name__)

# Recording `exchange` names -> ccxt exchange ids: the format's table (both spellings of a venue replay),
# which `flowgauge simulate --recording` checks against as well.
EXCHANGE_IDS = EXCHANGE_VENUES


class ReplayError(RuntimeError):
    """The recording cannot be replayed (unknown venue, no instrument metadata, unreadable file)."""


@dataclass
class ReplayStats:
    frames: int = 0
    frames_ignored: int = 0  # frames on connections we do not parse (spot, unknown)
    published: int = 0
    published_from_file: int = 0  # of `published`, those from the current file (a file failing midway)
    resyncs_needed: int = 0  # books left wrong by the recording (a gap it never resolved)
    per_topic: dict[str, int] = field(default_factory=dict)
    files_total: int = 0
    files_done: int = 0  # files read to the end, failed ones included
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, why) for files that could not be replayed
    current_file: str = ""  # the file being read, for progress reports
    recorded_ts: float = 0.0  # receive time (unix s) of the last frame replayed: where we are in the recording
    read: ReadStats = field(default_factory=ReadStats)  # the current file's reader counts (bytes_read)


@dataclass
class _Connections:
    """What the connections seen so far carried, across files: tells a reconnect from a first connect."""

    books: set[tuple[str, str]] = field(default_factory=set)  # (venue, symbol) some connection carried
    # Connect lines already replayed. A rotated file repeats the last connect line of every open connection
    # (so it replays on its own); seeing the identical line again is that repeat, not a new connection.
    lines: set[tuple[str, float, str]] = field(default_factory=set)


class _FileReplay:
    """State of one recording being replayed into a shared engine."""

    def __init__(
        self, path: Path, engine: Engine, symbols: dict[str, Sequence[str]] | None, connections: _Connections
    ) -> None:
        self.path = path
        self.engine = engine
        self.symbols = symbols
        self.connections = connections
        self.venue: str | None = None
        self.adapter: Any = None
        self.http: list[tuple[str, str]] = []
        self.instruments: list[Instrument] | None = None
        self.parsers: dict[str, VenueParser | None] = {}
        self.polls: list[PollRequest] = []
        self.by_symbol: dict[str, Instrument] = {}
        self.tracked: set[str] = set()  # symbols already seen (added to the engine if they are ours)
        self.early_snapshots: list[Http] = []  # REST snapshots recorded before any connection opened
        # Other REST answers from before then: poll answers among them reached the engine live (polls start
        # with the connections, and one can answer first), so they are handled once the instruments are known.
        self.early_answers: list[Http] = []
        self.marks_metadata = False  # the recording names its metadata answers (conn ends with MARKETS_CONN)

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
            for early in self.early_answers:
                self._deliver_poll(early, stats)
            self.early_answers.clear()
        assert self.instruments is not None
        parser = replay_parser(self.adapter, record.addr, self.instruments)
        line = (record.conn, record.ts, record.addr)
        repeated = line in self.connections.lines
        self.connections.lines.add(line)
        if parser is not None and not repeated:
            # A new connection in the recording is a reconnect for the books an earlier connection carried:
            # as live, they restart from its snapshots (the sync machine then bridges buffered deltas).
            # Books only a REST poll has mentioned so far were never connected: nothing to reset, as live.
            venue = self.venue or ""
            books = getattr(parser, "book_symbols", [i.symbol for i in parser.instruments.values()])
            carried = [s for s in books if (venue, s) in self.connections.books]
            self.connections.books.update((venue, s) for s in books)
            if carried:
                self.engine.invalidate(venue, carried, InvalidReason.RESET, "reconnect in recording")
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
            elif record.conn.endswith(MARKETS_CONN):
                self.marks_metadata = True
            elif self.marks_metadata:
                # Only a recorder that names its metadata answers lets us tell the rest from them
                # (cryptofeed's and older flowgauge recordings do not: their early answers stay metadata).
                self.early_answers.append(record)
            return
        if record.conn.endswith(MARKETS_CONN):
            # A metadata refresh (venues.<id>.markets_refresh_s): live, ccxt alone read it, the engine never saw it;
            # on Hyperliquid it would otherwise pass for an answer to the open-interest poll (same POST /info).
            return
        for parser in {id(p): p for p in self.parsers.values() if p is not None}.values():
            if self._deliver_snapshot(record, parser, stats):
                return
        self._deliver_poll(record, stats)

    def _deliver_poll(self, record: Http, stats: ReplayStats) -> bool:
        parts = urlsplit(record.url)
        query = dict(parse_qsl(parts.query))
        for poll in self.polls:
            if poll.path == parts.path and all(query.get(k) == v for k, v in poll.params.items()):
                self._handle(self.adapter.parse_poll(poll, record.data, int(record.ts * 1e9)), None, stats)
                return True
        return False

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
    stats: ReplayStats | None = None,
    on_file_error: Callable[[str, str], None] | None = None,
    on_progress: Callable[[ReplayStats], None] | None = None,
    publish_trades: bool = False,
    clock_skew_max_s: Mapping[str, float] | None = None,
    atomic: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    aggregates: CrossVenueAggregates | None = None,
    families: Iterable[str] = DEFAULT_FAMILIES,
    metric_params: MetricParams | None = None,
    bars: BarSpec | None = None,
    interleave: bool = False,
) -> tuple[Engine, ReplayStats]:
    """Replay recordings in order into one engine publishing to `sink`.

    Args:
        paths: recording files (`.jsonl.zst` or `.jsonl`).
        sink: `sink(topic, payload_bytes)` for every published message.
        speed: 0 = as fast as possible, 1 = recorded pace, N = N times faster.
        symbols: venue -> unified symbols to keep; None keeps every derivative instrument.
        stats: counts to update in place (the caller still has them if the replay is interrupted).
        on_file_error: `on_file_error(path, why)` for a file that cannot be replayed, then the next file
            goes on (recorded in `stats.failed`); without it the first such file raises ReplayError.
        on_progress: called with the stats at every file start and every few thousand records.
        publish_trades: also publish trade records (config `publish.trades`); off keeps the output unchanged.
        clock_skew_max_s: venue -> CLOCK_SKEW bound (config `venues.<id>.clock_skew_max_s`); None: the default.
        atomic: entered around each message's `sink` call and its count, so a caller that holds an interrupt
            inside it (replay's command) stops between messages: every message counted was handed over whole.
        aggregates: also publish cross-venue aggregates (config `publish.aggregates`; exchange-time cadence, so
            deterministic); None publishes none. Files replay one after another unless `interleave`, so a later
            file's venues would find the earlier ones STALE: replay a session of several venues interleaved.
        families: the metric families published (config `publish.families`); metric_params: their parameters
            (config `metrics`; None: the defaults).
        bars: also publish closed clock bars (config `publish.bars`); None publishes none. Replay closes a bar on
            the first book state of a later bar only (no timer), so its bars depend on the recorded events alone;
            the bars still open when the recordings end are not published.
        interleave: replay the files of different venues interleaved by receive time, each venue's files one
            after another (`flowgauge.replay.interleave`), instead of every file after the previous one: what spans
            venues (aggregates) then sees the frames in the order the daemon received them.
    """
    if speed < 0:
        raise ValueError("speed must be >= 0")
    stats = stats if stats is not None else ReplayStats()
    stats.files_total += len(paths)

    def counting_sink(topic: str, payload: bytes) -> None:
        with atomic():
            sink(topic, payload)  # counted once handed over: a sink that fails has not published it
            stats.published += 1
            stats.published_from_file += 1
            stats.per_topic[topic] = stats.per_topic.get(topic, 0) + 1

    engine = Engine(
        counting_sink,
        clock=clock,
        publish_trades=publish_trades,
        clock_skew_max_s=clock_skew_max_s if clock_skew_max_s is not None else DEFAULT_CLOCK_SKEW_MAX_S,
        aggregates=aggregates,
        families=families,
        metric_params=metric_params,
        bars=bars,
    )
    if interleave:
        from flowgauge.replay.interleave import replay_interleaved

        def fail(path: str, exc: BaseException) -> None:
            why = _describe(Path(path), exc)
            stats.failed.append((path, why))
            if on_file_error is None:
                raise exc
            on_file_error(path, why)

        replay_interleaved(paths, engine, symbols, stats, speed, fail, on_progress)
        return engine, stats
    connections = _Connections()
    for path in paths:
        stats.current_file = str(path)
        stats.read = ReadStats()
        stats.published_from_file = 0
        if on_progress is not None:
            on_progress(stats)
        try:
            _replay_file(Path(path), _FileReplay(Path(path), engine, symbols, connections), speed, stats, on_progress)
        except (ReplayError, RecordingError, OSError) as exc:
            why = _describe(Path(path), exc)
            stats.failed.append((str(path), why))
            if on_file_error is None:
                raise
            on_file_error(str(path), why)
        stats.files_done += 1  # not on an interrupt: the summary then names the file it stopped in
    return engine, stats


_PROGRESS_EVERY = 4096  # records between progress callbacks: cheap enough to ignore, often enough to see


def _replay_file(
    path: Path,
    state: _FileReplay,
    speed: float,
    stats: ReplayStats,
    on_progress: Callable[[ReplayStats], None] | None,
) -> None:
    first_ts: float | None = None
    wall_start = time.monotonic()
    for record in iter_records(path, stats.read):
        if on_progress is not None and stats.read.records % _PROGRESS_EVERY == 0:
            on_progress(stats)
        if isinstance(record, Header):
            venue = EXCHANGE_IDS.get(record.exchange)
            if venue is None:
                known = ", ".join(EXCHANGE_IDS)
                raise ReplayError(f"{path}: unknown exchange {record.exchange!r} (known: {known})")
            state.set_venue(venue)
        elif isinstance(record, Http):
            state.on_http(record, stats)
        elif isinstance(record, Connect):
            state.on_connect(record, stats)
        elif isinstance(record, Recv):
            stats.frames += 1
            stats.recorded_ts = record.ts
            if speed > 0:
                if first_ts is None:
                    first_ts = record.ts
                due = (record.ts - first_ts) / speed - (time.monotonic() - wall_start)
                if due > 0:
                    if on_progress is not None:
                        on_progress(stats)  # waiting anyway: a paced replay reports at its own pace
                    time.sleep(due)
            state.on_recv(record, stats)
    if state.venue is None:
        raise ReplayError(f"{path}: no header line naming the exchange (empty, or not a recording)")


def _describe(path: Path, exc: BaseException) -> str:
    """Why a file failed, in one line, without repeating its name."""
    if isinstance(exc, RecordingError):
        return f"line {exc.line_no}: {exc.why}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text
