"""Composition root: builds every component from `Settings`, runs them, stops them in order.

Lifecycle (SIGTERM/SIGINT -> exit 0 within `shutdown_timeout_s`):
1. the first signal sets `stop`; /readyz turns 503 at once;
2. venue sessions are cancelled (their sockets close, each with a short close handshake);
3. the recorder flushes and closes its file, the fan-out closes client connections;
4. the HTTP server closes last, so the final counters could be scraped until the end.
A second signal exits immediately with status 1.

Book lifecycle: every `venues.<id>.markets_refresh_s` the venue's instrument metadata is loaded again, and a book
whose instrument is no longer trading (delisted, delivered, expired; `connectors.markets.retirement`) is retired;
a dated future (or a perpetual with a scheduled delisting time) is also retired by a timer at that time, without
waiting for the next refresh. A retired book publishes its final status, is never resynced, loses its Prometheus
series and its REST polls, and no longer counts for readiness: `/readyz` is 200 while the daemon serves and at least
one book is VALID.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from flowgauge.config import Settings, VenueSettings, open_listeners, secret_values, shard_venues
from flowgauge.conflation import BacklogConflation
from flowgauge.connectors import registry
from flowgauge.connectors.base import PollRequest, VenueAdapter
from flowgauge.connectors.markets import (
    MarketsError,
    UnlistedGuard,
    delivered_by_name,
    delivered_instrument,
    load_markets,
    retire_time,
    retirement,
    select,
)
from flowgauge.connectors.rest import RestScheduler
from flowgauge.connectors.session import Session, SessionSettings
from flowgauge.engine import Engine
from flowgauge.feeds import VenueFeed
from flowgauge.heap import TRIM_INTERVAL_S, HeapTrimmer
from flowgauge.logs import BurstLimiter, event, register_secrets
from flowgauge.metrics.aggregate import CrossVenueAggregates
from flowgauge.metrics.bar_feed import BarSpec
from flowgauge.metrics.families import CORE, resolve
from flowgauge.metrics.params import MetricParams, from_settings
from flowgauge.publish.base import Publisher
from flowgauge.publish.embedded import EmbeddedBus
from flowgauge.publish.nats import NatsPublisher
from flowgauge.publish.redis import RedisPublisher
from flowgauge.recording import MARKETS_CONN, RecordingWriter
from flowgauge.telemetry.collector import AggregateCollector, ClockOffsetCollector, SignalCollector
from flowgauge.telemetry.family_gauges import FamilyCollector
from flowgauge.telemetry.health import HealthBoard
from flowgauge.telemetry.http import HttpServer
from flowgauge.telemetry.instruments import RECONNECT_REASONS, BookInstruments, Telemetry, VenueInstruments
from flowgauge.types import Instrument, RetireReason

log = logging.getLogger(__name__)

RECORDER_FLUSH_INTERVAL_S = 1.0
NOT_STARTED = "NOT_STARTED"  # /status state of a book whose instrument metadata is not loaded yet
MARKETS_RETRY_MAX_S = 30.0
# The lifecycle watcher wakes at least this often, so an expiry is noticed on time even if the wall clock jumps.
LIFECYCLE_MAX_SLEEP_S = 30.0


def metric_params(settings: Settings) -> MetricParams:
    """The config's `metrics` section as the metric layer's parameters (the same fields: config imports no
    metrics module, so it keeps its own copy of the structs)."""
    return from_settings(settings.metrics)


def exported_families(settings: Settings) -> tuple[str, ...]:
    """The families whose headline gauges /metrics exports: `http.metrics_families` that `publish.families`
    publishes (an unpublished family has no fields to export); core's fields are SignalCollector's, always on."""
    published = set(resolve(settings.publish.families)) - {CORE}
    return tuple(name for name in resolve(settings.http.metrics_families) if name in published)


def bar_spec(settings: Settings) -> BarSpec | None:
    """The config's `publish.bars` as the engine's bar parameters; None when bars are off."""
    bars = settings.publish.bars
    return BarSpec(bars.interval_s, bars.z_half_life_s, bars.z_min_samples) if bars.enabled else None


class _TelemetryHooks:
    """Adapts engine and session callbacks to Prometheus instruments (cached label children)."""

    def __init__(self, telemetry: Telemetry, health: HealthBoard) -> None:
        self.telemetry = telemetry
        self.health = health
        self._venues: dict[str, VenueInstruments] = {}
        self._books: dict[tuple[str, str], BookInstruments] = {}
        self.on_retired: Callable[[str, str], None] | None = None  # the daemon's own clean-up of a retired book

    def venue(self, venue: str) -> VenueInstruments:
        instruments = self._venues.get(venue)
        if instruments is None:
            instruments = self._venues[venue] = self.telemetry.register_venue(venue)
        return instruments

    def book(self, venue: str, symbol: str) -> BookInstruments:
        instruments = self._books.get((venue, symbol))
        if instruments is None:
            instruments = self._books[(venue, symbol)] = self.telemetry.register_book(venue, symbol)
        return instruments

    # engine
    def resync(self, venue: str, symbol: str, reason: str) -> None:
        book = self.book(venue, symbol)
        book.resync(reason)
        if reason == "gap":
            book.sequence_gaps.inc()

    def bad_frame(self, venue: str) -> None:
        self.venue(venue).bad_frames.inc()

    def conflated(self, venue: str, shed: int) -> None:
        self.venue(venue).payloads_conflated.inc(shed)

    def retired(self, venue: str, symbol: str) -> None:
        self._books.pop((venue, symbol), None)
        self.telemetry.remove_book(venue, symbol)
        if self.on_retired is not None:
            self.on_retired(venue, symbol)

    def published(self, venue: str, ts_exchange: int, ts_recv: int, ts_publish: int) -> None:
        instruments = self.venue(venue)
        instruments.observe_exchange_to_recv((ts_recv - ts_exchange) / 1e9)
        instruments.observe_recv_to_publish((ts_publish - ts_recv) / 1e9)

    # rest
    def rest_request(self, venue: str, kind: str, outcome: str) -> None:
        self.telemetry.count_rest_request(venue, kind, outcome)

    # every venue I/O path (markets, REST, websocket)
    def venue_failure(self, venue: str, where: str, cause: str, message: str, symbols: Sequence[str]) -> None:
        self.telemetry.count_venue_error(venue, cause)
        self.health.record(venue, where, cause, message, symbols)

    # session
    def connected(self, venue: str, up: bool) -> None:
        self.venue(venue).connected.set(1 if up else 0)

    def received(self, venue: str, nbytes: int) -> None:
        self.venue(venue).frame_received(nbytes)

    def reconnect(self, venue: str, reason: str) -> None:
        self.venue(venue).reconnect(reason if reason in RECONNECT_REASONS else "error")


class Daemon:
    """The running daemon. `run()` returns when stopped; `ready` is set once servers listen."""

    def __init__(self, settings: Settings, *, record_dir: str | None = None) -> None:
        self.settings = settings
        # Large buffers stay mmapped (returned to the OS when freed) and `run` trims the heap periodically:
        # without both, RSS crept up for as long as the daemon ran (flowgauge.heap).
        self.heap = HeapTrimmer.load()
        self.heap.fix_mmap_threshold()
        # Tokens and broker passwords print as *** in every log line and /status document from here on.
        register_secrets(secret_values(settings))
        # This process's shard of the configured instruments: everything below (books, /status, /readyz, venue
        # connections) sees only these; a venue with none of its symbols here is not connected at all.
        self.venues = shard_venues(settings)
        self.record_dir = record_dir or settings.record.dir
        self.registry = CollectorRegistry()
        # Only the configured backends get publisher series: /metrics must not show a backend that is not running.
        self.telemetry = Telemetry(self.registry, backends=configured_backends(settings))
        self.telemetry.set_shard(settings.shard.index, settings.shard.count)
        self.health = HealthBoard({venue: list(v.symbols) for venue, v in self.venues.items()})
        self.hooks = _TelemetryHooks(self.telemetry, self.health)
        self.hooks.on_retired = self._book_retired
        self._markets_loaded: set[str] = set()
        self.stop = asyncio.Event()
        self.listening = asyncio.Event()
        self.stopping = False
        self.bus: EmbeddedBus | None = None
        self.nats: NatsPublisher | None = None
        self.redis: RedisPublisher | None = None
        self.publishers: list[Publisher] = []  # every running backend; each gets every payload
        self.http: HttpServer | None = None
        self.recorders: dict[str, RecordingWriter] = {}
        self.rest: dict[str, RestScheduler] = {}
        aggregate_settings = settings.publish.aggregates
        aggregates = (
            CrossVenueAggregates(
                aggregate_settings.interval_ms, aggregate_settings.stale_s, aggregate_settings.min_venues
            )
            if aggregate_settings.enabled
            else None
        )
        self.engine = Engine(
            self._publish,
            min_interval_ms=settings.publish.min_interval_ms,
            hooks=self.hooks,
            book_max_levels=settings.book_max_levels,
            publish_trades=settings.publish.trades,
            clock_skew_max_s={venue: v.clock_skew_max_s for venue, v in self.venues.items()},
            aggregates=aggregates,
            families=settings.publish.families,
            metric_params=metric_params(settings),
            bars=bar_spec(settings),
        )
        self.registry.register(SignalCollector(self.engine))
        self.registry.register(FamilyCollector(self.engine, exported_families(settings)))
        if aggregates is not None:
            self.registry.register(AggregateCollector(aggregates))
        self.registry.register(ClockOffsetCollector(self.engine))
        # Backlog conflation (publish.conflate: auto): the flush runs when the current loop turn is over.
        self.conflation: BacklogConflation | None = None
        if settings.publish.conflate == "auto":
            self.conflation = BacklogConflation(
                self.engine,
                settings.publish.conflate_after_ms,
                lambda callback: asyncio.get_running_loop().call_soon(callback),
            )
        self._expected_books: set[tuple[str, str]] = set()
        self._sessions: dict[str, list[tuple[VenueFeed, asyncio.Task[None], Session]]] = {}  # by venue
        self._recorder_drops_reported: dict[int, int] = {}
        self._recorder_errors = BurstLimiter(60.0)

    def _publish(self, topic: str, payload: bytes) -> None:
        for publisher in self.publishers:
            publisher.publish(topic, payload)

    def ready(self) -> bool:
        """Serving, and at least one book VALID: one good book is worth routing subscribers to. Each book's own
        health is in /status, on its status topic and in the alerts; a retired book never counts."""
        if self.stopping or not self.listening.is_set():
            return False
        # A shard with no instrument (more shards than it takes) is ready as soon as it listens: it has nothing
        # to wait for, and an orchestrator must not hold a rollout on it.
        if not self._expected_books:
            return True
        return any(state == "VALID" for _, _, state in self.engine.book_states())

    def _book_retired(self, venue: str, symbol: str) -> None:
        """After the engine retired a book: no more REST polls or snapshots for it, and a connection that carries
        only retired instruments is closed for good (it would otherwise reconnect and resubscribe forever)."""
        rest = self.rest.get(venue)
        if rest is not None:
            rest.forget(symbol)
        for feed, task, _ in self._sessions.get(venue, []):
            if not task.done() and all(self.engine.is_retired(venue, s) for s in feed.symbols):
                event(log, logging.INFO, "connection_retired", venue=venue, symbols=feed.symbols)
                task.cancel()
                task.add_done_callback(lambda _task: self._connection_retired(venue))

    def _connection_retired(self, venue: str) -> None:
        """A connection closed for good has set the venue's flowgauge_ws_connected to 0 on its way out: the gauge
        says again whether the venue's remaining connections are up, and once none remains (every book retired)
        the series goes, so that no 'websocket down' alert fires for a venue with nothing left to stream."""
        if self.stopping:
            return
        remaining = [session for _, task, session in self._sessions.get(venue, []) if not task.done()]
        if remaining:
            self.hooks.connected(venue, all(session.connected.is_set() for session in remaining))
        else:
            with contextlib.suppress(KeyError):
                self.telemetry.ws_connected.remove(venue)

    def _books(self) -> dict[str, dict[str, dict[str, object]]]:
        """Every configured book, from the start: the engine's view once markets loaded, NOT_STARTED before;
        each with the last venue failure that affected it."""
        known: dict[str, dict[str, dict[str, object]]] = self.engine.status()["venues"]
        books: dict[str, dict[str, dict[str, object]]] = {}
        for venue, venue_settings in self.venues.items():
            books[venue] = {}
            for symbol in venue_settings.symbols:
                book = known.get(venue, {}).get(symbol)
                if book is None:
                    book = _not_started_book(venue in self._markets_loaded)
                last_error = self.health.book_error(venue, symbol)
                book["last_error"] = last_error.as_dict() if last_error is not None else None
                books[venue][symbol] = book
        return books

    def status(self) -> dict[str, object]:
        status = self.engine.status()
        books = self._books()
        status["venues"] = books
        status["ready"] = self.ready()
        # A venue is ready when at least one of its books is VALID and every one that is not retired is.
        status["ready_by_venue"] = {
            venue: not self.stopping
            and any(book["state"] == "VALID" for book in venue_books.values())
            and all(book["state"] in ("VALID", "RETIRED") for book in venue_books.values())
            for venue, venue_books in books.items()
        }
        status["configured"] = {
            venue: list(venue_settings.symbols) for venue, venue_settings in self.venues.items()
        }
        shard = self.settings.shard
        status["shard"] = {
            "index": shard.index,
            "count": shard.count,
            "instruments": sum(len(v.symbols) for v in self.venues.values()),
        }
        venue_status: dict[str, dict[str, object]] = {}
        for venue in self.venues:
            last_error = self.health.venue_error(venue)
            venue_status[venue] = {
                "markets_loaded": venue in self._markets_loaded,
                "last_error": last_error.as_dict() if last_error is not None else None,
                "errors": self.health.counts(venue),
            }
        status["venue_status"] = venue_status
        # The broker publishers' health: a backend that is down shows here before its drop counter moves.
        status["publishers"] = {p.backend: p.status() for p in (self.nats, self.redis) if p is not None}
        return status

    def not_ready(self) -> dict[str, object]:
        """The /readyz body when not ready: a one-line reason and each book that is not VALID, with why."""
        if self.stopping:
            return {"reason": "shutting down"}
        books = [
            {"venue": venue, "symbol": symbol, **{k: book.get(k) for k in ("state", "reason", "detail", "last_error")}}
            for venue, venue_books in self._books().items()
            for symbol, book in venue_books.items()
            if book["state"] != "VALID"
        ]
        total = sum(len(v.symbols) for v in self.venues.values())
        causes = sorted({b["last_error"]["cause"] for b in books if b["last_error"]})  # type: ignore[index]
        summary = f"{len(books)} of {total} books not VALID"
        retired = sum(1 for b in books if b["state"] == "RETIRED")
        if retired:
            summary += f", {retired} of them retired"
        if causes:
            summary += f" (last venue errors: {', '.join(causes)})"
        return {"reason": summary, "not_ready": books}

    async def run(self) -> None:
        settings = self.settings
        for venue, venue_settings in self.venues.items():
            self.hooks.venue(venue)
            for symbol in venue_settings.symbols:
                self._expected_books.add((venue, symbol))
                self.hooks.book(venue, symbol)
        async with contextlib.AsyncExitStack() as stack:
            # Entered first, closed last: /metrics stays up until everything else has stopped.
            # Teardown shares one budget (shutdown_timeout_s): each component gets a bounded slice, and
            # whatever overruns it is abandoned rather than holding the process past its grace period.
            budget = settings.shutdown_timeout_s
            for section, host, _ in open_listeners(settings.bus, settings.http):
                # Config validation refused this unless <section>.allow_unauthenticated is true.
                log.warning("listener_unauthenticated: %s listens on %s (not loopback) without a token because "
                            "%s.allow_unauthenticated is true", section, host, section)
            self.http = HttpServer(
                settings.http.host, settings.http.port, self.registry, self.ready, self.status,
                shutdown_timeout=budget * 0.2, not_ready=self.not_ready,
                token=settings.http.token, telemetry=self.telemetry,
            )
            await _listen(self.http.start(), "http", settings.http.host, settings.http.port)
            stack.push_async_callback(_bounded, self.http.close, budget * 0.25, "http")
            embedded = settings.bus.embedded
            if embedded.enabled:
                self.bus = EmbeddedBus(
                    embedded.host,
                    embedded.port,
                    token=embedded.token,
                    client_queue=embedded.client_queue,
                    telemetry=self.telemetry,
                    close_timeout=budget * 0.15,
                    client_queue_bytes=embedded.client_queue_bytes,
                    client_max_lag_s=embedded.client_max_lag_s,
                    max_clients=embedded.max_clients,
                )
                await _listen(self.bus.start(), "bus.embedded", embedded.host, embedded.port)
                stack.push_async_callback(_bounded, self.bus.close, budget * 0.35, "bus")
                self.publishers.append(self.bus)
            nats_settings = settings.bus.nats
            if nats_settings.url is not None:  # on exactly when its URL is set
                # Connects in the background: a NATS outage at startup delays nothing (payloads wait, bounded).
                self.nats = NatsPublisher(
                    nats_settings.url,
                    telemetry=self.telemetry,
                    queue_size=nats_settings.queue_size,
                    pending_bytes=nats_settings.pending_bytes,
                    reconnect_wait_s=nats_settings.reconnect_wait_s,
                    connect_timeout_s=nats_settings.connect_timeout_s,
                    jetstream=nats_settings.jetstream,
                    stream=nats_settings.stream,
                    duplicate_window_s=nats_settings.duplicate_window_s,
                    history=nats_settings.history,
                    history_stream=nats_settings.history_stream,
                    history_max_age_s=nats_settings.history_max_age_s,
                    history_max_bytes=nats_settings.history_max_bytes,
                    user=nats_settings.user,
                    password=nats_settings.password,
                    token=nats_settings.token,
                    credentials_file=nats_settings.credentials_file,
                )
                await self.nats.start()
                stack.push_async_callback(_bounded, self.nats.close, budget * 0.15, "bus.nats")
                self.publishers.append(self.nats)
            redis_settings = settings.bus.redis
            if redis_settings.url is not None:  # on exactly when its URL is set
                # Like NATS: connects on first use, retries by itself, never holds the daemon back.
                self.redis = RedisPublisher(
                    redis_settings.url,
                    telemetry=self.telemetry,
                    queue_size=redis_settings.queue_size,
                    connect_timeout_s=redis_settings.connect_timeout_s,
                    reconnect_max_s=redis_settings.reconnect_max_s,
                    last_key_prefix=redis_settings.last_key_prefix,
                    last_ttl_s=redis_settings.last_ttl_s,
                    streams=redis_settings.streams,
                    stream_key_prefix=redis_settings.stream_key_prefix,
                    stream_maxlen=redis_settings.stream_maxlen,
                    password=redis_settings.password,
                )
                await self.redis.start()
                stack.push_async_callback(_bounded, self.redis.close, budget * 0.15, "bus.redis")
                self.publishers.append(self.redis)
            stack.callback(self._close_recorders)
            event(
                log,
                logging.INFO,
                "daemon_listening",
                http_port=self.http.bound_port,
                bus_port=self.bus.bound_port if self.bus else None,
                core=self.engine.core,
                shard=f"{settings.shard.index}/{settings.shard.count}",
                instruments=len(self._expected_books),
            )
            if not self._expected_books:
                # Chosen over refusing to start: a StatefulSet scaled past the instrument count keeps its extra
                # pods running (and ready) instead of crash-looping; this line says why they publish nothing.
                event(log, logging.WARNING, "shard_empty", shard_index=settings.shard.index,
                      shard_count=settings.shard.count, detail="no configured instrument falls in this shard: "
                      "nothing to do (no venue connected, nothing published)")
            self.listening.set()
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._stop_when_signalled(), name="shutdown-watcher")
                    for venue, venue_settings in self.venues.items():
                        tasks.create_task(self._run_venue(venue, venue_settings), name=f"venue:{venue}")
                    if self.record_dir:
                        tasks.create_task(self._flush_recorders(), name="recorder-flush")
                    if settings.publish.heartbeat_s > 0:
                        tasks.create_task(self._heartbeat(settings.publish.heartbeat_s), name="status-heartbeat")
                    if settings.publish.bars.enabled:
                        bars = settings.publish.bars
                        tasks.create_task(self._close_bars(bars.interval_s, bars.close_delay_ms), name="bar-timer")
                    if self.heap.available:
                        tasks.create_task(self._trim_heap(TRIM_INTERVAL_S), name="heap-trim")
            except* _ShutdownRequested:
                event(log, logging.INFO, "shutdown_requested")
            self.stopping = True

    async def _heartbeat(self, period_s: float) -> None:
        """Every `period_s`, the status of every started book again (`"heartbeat": true`), through the same
        publishers as every payload, so the embedded bus's current values, the JetStream state stream and the
        Redis last-value keys are refreshed too. Cancelled with the task group on stop; a failure of one round
        is logged and the next round runs (a heartbeat must never stop the daemon)."""
        loop = asyncio.get_running_loop()
        errors = BurstLimiter(60.0)
        next_at = loop.time() + period_s
        while True:
            # On a fixed schedule: a slow round does not push every later beat back.
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += period_s
            if next_at <= loop.time():  # fell a whole period behind (a stalled loop): skip, do not burst
                next_at = loop.time() + period_s
            try:
                self.engine.publish_heartbeats()
            except Exception as exc:  # one failed round must not end the heartbeat, nor the daemon
                suppressed = errors.allow("heartbeat")
                if suppressed is not None:
                    event(log, logging.ERROR, "heartbeat_failed", error=f"{type(exc).__name__}: {exc}"[:300],
                          suppressed_since_last=suppressed)

    async def _close_bars(self, interval_s: float, delay_ms: float) -> None:
        """Close the clock bars no event closed (an idle or dead feed still publishes its bars), a quarter of a bar
        (at most 1 s) apart: a bar goes out `delay_ms` after its end on its venue's clock, or soon after. Live only;
        a failed round is logged and the next one runs."""
        loop = asyncio.get_running_loop()
        errors = BurstLimiter(60.0)
        period = min(1.0, interval_s / 4)
        delay_ns = round(delay_ms * 1_000_000)
        next_at = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += period
            if next_at <= loop.time():  # fell behind (a stalled loop): no burst of rounds
                next_at = loop.time() + period
            try:
                self.engine.close_bars(time.time_ns(), delay_ns)
            except Exception as exc:  # the bar timer must never stop the daemon
                suppressed = errors.allow("bars")
                if suppressed is not None:
                    event(log, logging.ERROR, "bar_timer_failed", error=f"{type(exc).__name__}: {exc}"[:300],
                          suppressed_since_last=suppressed)

    async def _trim_heap(self, period_s: float) -> None:
        """Every `period_s`, give the C heap's wholly free pages back to the OS (flowgauge.heap says why)."""
        while True:
            await asyncio.sleep(period_s)
            self.heap.trim()

    async def _stop_when_signalled(self) -> None:
        await self.stop.wait()
        self.stopping = True
        raise _ShutdownRequested

    def _recorder(self, venue: str) -> RecordingWriter | None:
        if not self.record_dir:
            return None
        recorder = self.recorders.get(venue)
        if recorder is None:
            record = self.settings.record
            recorder = RecordingWriter(
                Path(self.record_dir),
                venue.upper(),
                rotate_bytes=int(record.rotate_mb * 1024 * 1024),
                rotate_seconds=record.rotate_s,
            )
            self.recorders[venue] = recorder
        return recorder

    async def _flush_recorders(self) -> None:
        while True:
            await asyncio.sleep(RECORDER_FLUSH_INTERVAL_S)
            for recorder in list(self.recorders.values()):
                # Compression and file writes happen off the event loop. Recording is optional: a full
                # disk or a removed directory is reported and retried, never fatal (pending is bounded).
                try:
                    await asyncio.to_thread(recorder.flush)
                except OSError as exc:
                    if self._recorder_errors.allow(str(id(recorder))) is not None:
                        event(log, logging.ERROR, "recorder_write_failed", error=repr(exc)[:200])
                self._report_recorder_drops(recorder)

    def _report_recorder_drops(self, recorder: RecordingWriter) -> None:
        reported = self._recorder_drops_reported.get(id(recorder), 0)
        if recorder.dropped > reported:
            self.telemetry.count_recorder_dropped(recorder.dropped - reported)
            self._recorder_drops_reported[id(recorder)] = recorder.dropped

    def _close_recorders(self) -> None:
        for recorder in self.recorders.values():
            try:
                recorder.close()
            except OSError as exc:
                event(log, logging.ERROR, "recorder_close_failed", error=repr(exc)[:200])

    async def _run_venue(self, venue: str, venue_settings: VenueSettings) -> None:
        adapter = registry.adapter(venue, best_quote=venue_settings.best_quote)
        instruments, markets = await self._load_instruments(venue, venue_settings)
        for instrument in instruments:
            self.engine.add_instrument(instrument, adapter.sequence_rule, adapter.buffer_deltas)
        # A configured dated contract delivered before today that the venue no longer lists: retired, not unknown.
        now_ms = time.time_ns() // 1_000_000
        for symbol in venue_settings.symbols:
            day = delivered_by_name(symbol, now_ms) if symbol not in markets else None
            if day is not None:
                self.engine.add_instrument(delivered_instrument(venue, symbol), adapter.sequence_rule)
                self.engine.retire(venue, symbol, RetireReason.EXPIRED, f"delivered on {day}, no longer listed")
        # Instruments that stopped trading before we started retire at once and are never subscribed.
        expiries = self._apply_lifecycle(venue, markets, instruments)
        instruments = [i for i in instruments if not self.engine.is_retired(venue, i.symbol)]
        unlisted = UnlistedGuard(len(markets))
        self._markets_loaded.add(venue)
        session_settings = SessionSettings(
            ping_interval_s=venue_settings.ping_interval_s,
            stale_after_s=venue_settings.stale_after_s,
            connect_timeout_s=venue_settings.connect_timeout_s,
            backoff_initial_s=venue_settings.backoff_initial_s,
            backoff_max_s=venue_settings.backoff_max_s,
            max_connection_age_s=getattr(adapter, "max_connection_age_s", None),
        )
        rest = RestScheduler(
            venue,
            venue_settings.rest_url,
            adapter.rest_weight_per_minute,
            timeout_s=venue_settings.connect_timeout_s,
            hooks=self.hooks,
            on_response=self._http_recorder(venue),
            failures=self.hooks,
        )
        self.rest[venue] = rest
        for poll in adapter.polls(instruments):
            rest.add_poll(poll, self._poll_callback(adapter, poll))
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(rest.run(), name=f"rest:{venue}")
            tasks.create_task(
                self._watch_lifecycle(venue, venue_settings, expiries, unlisted), name=f"lifecycle:{venue}"
            )
            if not instruments:
                return  # every configured instrument retired: nothing to stream
            connections = adapter.connections(instruments, venue_settings.ws_url, venue_settings.book_depth)
            for index, (url, parser) in enumerate(connections, start=1):
                symbols = [instrument.symbol for instrument in parser.instruments.values()]
                feed = VenueFeed(venue, symbols, parser, self.engine, rest, self.conflation)
                session = Session(
                    url,
                    feed,
                    session_settings,
                    hooks=self.hooks,
                    recorder=self._recorder(venue),
                    name=f"{venue.upper()}.ws.{index}",
                    failures=self.hooks,
                )
                task = tasks.create_task(session.run(), name=f"session:{venue}:{index}")
                self._sessions.setdefault(venue, []).append((feed, task, session))

    def _poll_callback(self, adapter: VenueAdapter, poll: PollRequest) -> Callable[[str, int], None]:
        def on_body(body: str, ts_recv: int) -> None:
            self.engine.handle_all(adapter.parse_poll(poll, body, ts_recv))

        return on_body

    def _http_recorder(self, venue: str, conn: str = "http.1") -> _ResponseRecorder | None:
        recorder = self._recorder(venue)
        if recorder is None:
            return None
        rec = recorder

        def on_response(url: str, body: str, ts_recv: int | None = None) -> None:
            # The scheduler's own receive time when it has one (what the pipeline got), else now.
            rec.http(f"{venue.upper()}.{conn}", url, body, None if ts_recv is None else ts_recv / 1e9)

        return on_response

    def _apply_lifecycle(
        self,
        venue: str,
        markets: dict[str, dict[str, Any]],
        instruments: Sequence[Instrument],
        unlisted: UnlistedGuard | None = None,
    ) -> dict[str, int]:
        """Retire every tracked book of `venue` whose instrument stopped trading by `markets` (unified symbol ->
        ccxt market); returns the scheduled retire time (ms) of each one still live. A missing one is delisted only
        once `unlisted` confirms it (missing from two usable answers in a row); at start none is missing (`select`
        refused an unknown symbol)."""
        now_ms = time.time_ns() // 1_000_000
        expiries: dict[str, int] = {}
        live = [i.symbol for i in instruments if self.engine.state(venue, i.symbol) is not None]
        confirmed: list[str] = []
        if unlisted is not None:
            confirmed, first = unlisted.unlisted(markets, live)
            for symbol in first:
                event(log, logging.WARNING, "instrument_unlisted", venue=venue, symbol=symbol,
                      action="retired if the next refresh does not list it either")  # fmt: skip
        for symbol in live:
            market = markets.get(symbol)
            if market is None and symbol not in confirmed and unlisted is not None:
                continue  # not (yet) proven delisted: a partial or glitched answer must not retire a live book
            retired = retirement(venue, symbol, market, now_ms)
            if retired is not None:
                reason, detail = retired
                if market is None:
                    detail += " (two refreshes in a row)"
                self.engine.retire(venue, symbol, reason, detail)
            elif market is not None:
                at = retire_time(venue, market)
                if at is not None:
                    expiries[symbol] = at
        return expiries

    async def _watch_lifecycle(
        self, venue: str, venue_settings: VenueSettings, expiries: dict[str, int], unlisted: UnlistedGuard
    ) -> None:
        """Retire books on time: each at its instrument's retire time (expiry, scheduled delisting), and any the
        venue stops listing as trading, seen by reloading its metadata every `markets_refresh_s`. A failed reload is
        counted and logged like the first load, and tried again at the next refresh."""
        loop = asyncio.get_running_loop()
        refresh_s = venue_settings.markets_refresh_s
        next_refresh = loop.time() + refresh_s
        while True:
            now_ms = time.time_ns() // 1_000_000
            for symbol, at in sorted(expiries.items(), key=lambda item: item[1]):
                if at <= now_ms:
                    del expiries[symbol]
                    when = datetime.datetime.fromtimestamp(at / 1000, tz=datetime.UTC).isoformat(timespec="seconds")
                    self.engine.retire(venue, symbol, RetireReason.EXPIRED, f"expired at {when}")
            if loop.time() >= next_refresh:
                next_refresh = loop.time() + refresh_s
                fresh = await self._refresh_markets(venue, venue_settings)
                if self.stopping:
                    # As in _load_instruments: a cancellation landing in ccxt/aiohttp as a request fails can be
                    # lost; the stop flag ends this task whatever happened to it.
                    raise asyncio.CancelledError
                if fresh is not None:
                    live = [s.instrument for s in self.engine.states() if s.instrument.venue == venue]
                    # One the answer left out keeps the retire time it had (its absence is not proven yet).
                    kept = {symbol: at for symbol, at in expiries.items() if symbol not in fresh}
                    expiries.clear()
                    expiries.update(self._apply_lifecycle(venue, fresh, live, unlisted))
                    for symbol, at in kept.items():
                        if self.engine.state(venue, symbol) is not None:
                            expiries.setdefault(symbol, at)
            if not any(s.instrument.venue == venue for s in self.engine.states()):
                return  # every book of the venue retired: nothing left to watch
            wake = next_refresh - loop.time()
            if expiries:
                wake = min(wake, (min(expiries.values()) - time.time_ns() // 1_000_000) / 1000)
            await asyncio.sleep(min(max(wake, 0.0), LIFECYCLE_MAX_SLEEP_S))

    async def _refresh_markets(self, venue: str, venue_settings: VenueSettings) -> dict[str, dict[str, Any]] | None:
        """The venue's markets by unified symbol, or None when loading failed (counted and logged)."""
        try:
            markets = await load_markets(
                venue, venue_settings.rest_url, venue_settings.connect_timeout_s,
                self._http_recorder(venue, MARKETS_CONN),
            )  # fmt: skip
        except MarketsError as exc:
            cause = exc.cause or "other"
            self.hooks.venue_failure(venue, "markets", cause, str(exc), [])
            event(log, logging.WARNING, "markets_refresh_failed", venue=venue, cause=cause, error=str(exc)[:300])
            return None
        if not markets:
            # An empty listing is a venue (or ccxt) glitch, not every instrument delisted at once: a failed refresh.
            self.hooks.venue_failure(venue, "markets", "protocol", f"{venue}: the venue listed no market", [])
            event(log, logging.WARNING, "markets_refresh_failed", venue=venue, cause="protocol",
                  error="the venue listed no market")  # fmt: skip
            return None
        return {str(m["symbol"]): m for m in markets}

    async def _load_instruments(
        self, venue: str, venue_settings: VenueSettings
    ) -> tuple[list[Instrument], dict[str, dict[str, Any]]]:
        """Instrument metadata through ccxt, retried with backoff: a venue REST outage must not kill us. Returns the
        configured instruments and every market by unified symbol (for their lifecycle)."""
        # Recorded under their own connection name: replay tells metadata from poll answers by it (both can
        # share a URL, e.g. Hyperliquid's POST /info).
        on_response = self._http_recorder(venue, MARKETS_CONN)
        delay = 0.5
        while True:
            if self.stopping:
                # A cancellation can be lost inside ccxt/aiohttp when it lands as a request fails (seen under load:
                # SIGTERM, then this loop kept retrying and the task group waited for it forever); the stop flag,
                # set by the signal handler, ends the loop whatever happened to the cancellation.
                raise asyncio.CancelledError
            try:
                markets = await load_markets(
                    venue, venue_settings.rest_url, venue_settings.connect_timeout_s, on_response
                )
                # An unknown symbol is a configuration error: fail loudly (select raises); but a dated contract
                # delivered before today that the venue dropped from its listing is expired (_run_venue retires it).
                listed = {str(m["symbol"]) for m in markets}
                now_ms = time.time_ns() // 1_000_000
                wanted = [s for s in venue_settings.symbols if s in listed or delivered_by_name(s, now_ms) is None]
                chosen = select(venue, markets, wanted)
                return chosen, {str(m["symbol"]): m for m in markets}
            except MarketsError as exc:
                if exc.cause is None:
                    raise  # a configuration error (unknown symbol, not a derivative): retrying cannot help
                self.hooks.venue_failure(venue, "markets", exc.cause, str(exc), list(venue_settings.symbols))
                # A rate-limited answer (429/418) is retried no sooner than its Retry-After.
                pause = max(delay, exc.retry_after_s or 0.0)
                event(log, logging.WARNING, "markets_load_failed", venue=venue, cause=exc.cause,
                      error=str(exc)[:300], retry_in_s=pause)
                await asyncio.sleep(pause)
                delay = min(MARKETS_RETRY_MAX_S, delay * 2)


def configured_backends(settings: Settings) -> tuple[str, ...]:
    """The publisher backends `settings` turns on, in the order the daemon starts them."""
    bus = settings.bus
    enabled = (("embedded", bus.embedded.enabled), ("nats", bus.nats.enabled), ("redis", bus.redis.enabled))
    return tuple(name for name, on in enabled if on)


def _not_started_book(markets_loaded: bool) -> dict[str, object]:
    """/status entry of a configured book the engine does not track yet: the engine's keys, nothing counted."""
    return {
        "instrument": None,
        "state": NOT_STARTED,
        "reason": None,
        "detail": "" if markets_loaded else "loading instrument metadata (markets)",
        "book_seq": None,
        "levels": [0, 0],
        "levels_dropped": 0,
        "resyncs": 0,
        "gaps": 0,
        "stale_dropped": 0,
        "published": 0,
        "throttled": 0,
        "last_ts_exchange": None,
    }


class _ResponseRecorder(Protocol):
    """Records one REST answer; `ts_recv` (ns) when the caller has its own receive time (the scheduler)."""

    def __call__(self, url: str, body: str, ts_recv: int | None = None) -> None: ...


class _ShutdownRequested(Exception):
    """Raised inside the task group to cancel every task when a stop signal arrives."""


class StartupError(RuntimeError):
    """The daemon cannot start as configured (a port already taken): exit 2 with this message."""


async def _listen(start: Awaitable[None], what: str, host: str, port: int) -> None:
    try:
        await start
    except OSError as exc:
        raise StartupError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}") from exc


async def _bounded(close: Callable[[], Awaitable[None]], seconds: float, what: str) -> None:
    """Run one teardown step within its share of the shutdown budget; abandon it past that."""
    try:
        async with asyncio.timeout(seconds):
            await close()
    except TimeoutError:
        event(log, logging.WARNING, "shutdown_step_overran", step=what, budget_s=round(seconds, 2))


async def run(settings: Settings, *, record_dir: str | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the process exit code."""
    daemon = Daemon(settings, record_dir=record_dir)
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            event(log, logging.ERROR, "second_signal_exit", signal=signum)
            os._exit(1)
        event(log, logging.INFO, "signal_received", signal=signal.Signals(signum).name)
        daemon.stopping = True
        daemon.stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    started_at = time.monotonic()
    rejected: list[str] = []
    try:
        await daemon.run()
    except* MarketsError as group:
        rejected = [str(exc) for exc in group.exceptions]
    except* StartupError as group:
        rejected = [str(exc) for exc in group.exceptions]
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    if rejected:
        for reason in rejected:
            event(log, logging.ERROR, "cannot_start", error=reason)
            print(f"flowgauge: {reason}", file=sys.stderr)
        return 2
    event(log, logging.INFO, "daemon_stopped", uptime_s=round(time.monotonic() - started_at, 3))
    return 0
