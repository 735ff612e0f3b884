"""Offline replay: recorded frames through the same parsers and engine the daemon runs live.

Frames are tied to connections by `conn`, and each connection's `connect` URL picks the parser
(Bybit spot and linear share topic names, so the URL is the only way to tell them apart).
Instrument metadata comes from the recording's own REST lines, parsed by ccxt. Exchange time
drives every metric, so the same input yields the same output (`ts_publish` aside).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.connectors import bybit
from service.connectors.markets import instrument_from_market, markets_from_recording
from service.engine import Engine, Sink
from service.replay.recording import Connect, Header, Http, Recv, iter_records
from service.types import Instrument

log = logging.getLogger(__name__)

# Recording `exchange` names (cryptofeed's) -> ccxt exchange ids.
EXCHANGE_IDS = {
    "BYBIT": "bybit",
    "BINANCE_FUTURES": "binanceusdm",
    "OKX": "okx",
    "DERIBIT": "deribit",
    "HYPERLIQUID": "hyperliquid",
}
DERIVATIVE_CATEGORIES = {"bybit": ("linear", "inverse")}


class ReplayError(RuntimeError):
    """The recording cannot be replayed (unknown venue, no instrument metadata, unreadable file)."""


@dataclass
class ReplayStats:
    frames: int = 0
    frames_ignored: int = 0  # frames on connections we do not parse (spot, unknown)
    published: int = 0
    resyncs_needed: list[str] = field(default_factory=list)
    per_topic: dict[str, int] = field(default_factory=dict)


class _FileReplay:
    """State of one recording being replayed into a shared engine."""

    def __init__(self, path: Path, engine: Engine, symbols: dict[str, Sequence[str]] | None) -> None:
        self.path = path
        self.engine = engine
        self.symbols = symbols
        self.venue: str | None = None
        self.http: list[tuple[str, str]] = []
        self.instruments: dict[str, list[Instrument]] | None = None  # category -> instruments
        self.parsers: dict[str, bybit.BybitParser | None] = {}

    def _load_instruments(self) -> None:
        venue = self._require_venue()
        markets = markets_from_recording(venue, self.http)
        wanted = None if self.symbols is None else set(self.symbols.get(venue, ()))
        by_category: dict[str, list[Instrument]] = {}
        for market in markets:
            instrument = instrument_from_market(venue, market)
            if not instrument.derivative:
                continue
            if wanted is not None and instrument.symbol not in wanted:
                continue
            by_category.setdefault(instrument.category, []).append(instrument)
        if not by_category:
            raise ReplayError(f"{self.path}: no derivative instruments in the recording's REST metadata")
        self.instruments = by_category

    def _require_venue(self) -> str:
        if self.venue is None:
            raise ReplayError(f"{self.path}: no header line naming the exchange")
        return self.venue

    def on_connect(self, record: Connect) -> None:
        if self.instruments is None:
            self._load_instruments()
        assert self.instruments is not None
        venue = self._require_venue()
        parser = None
        if venue == "bybit":
            category = bybit.category_of_url(record.addr)
            if category in DERIVATIVE_CATEGORIES["bybit"] and category in self.instruments:
                instruments = self.instruments[category]
                parser = bybit.BybitParser(category, instruments)
        else:
            raise ReplayError(f"{self.path}: venue {venue!r} is not supported by replay yet")
        self.parsers[record.conn] = parser

    def on_recv(self, record: Recv, stats: ReplayStats) -> None:
        parser = self.parsers.get(record.conn)
        if parser is None:
            stats.frames_ignored += 1
            return
        events = parser.feed(record.data, int(record.ts * 1e9))
        engine = self.engine
        for item in events:
            symbol = getattr(item, "symbol", None)
            if symbol is not None and engine.state(parser_venue(item), symbol) is None:
                instrument = _find(parser.instruments.values(), symbol)
                if instrument is not None:
                    engine.add_instrument(instrument)
            resync = engine.handle(item)
            if resync is not None:
                stats.resyncs_needed.append(resync)


def parser_venue(item: object) -> str:
    return str(getattr(item, "venue", ""))


def _find(instruments: Iterable[Instrument], symbol: str) -> Instrument | None:
    for instrument in instruments:
        if instrument.symbol == symbol:
            return instrument
    return None


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
                state.venue = venue
            elif isinstance(record, Http):
                state.http.append((record.url, record.data))
            elif isinstance(record, Connect):
                state.on_connect(record)
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
