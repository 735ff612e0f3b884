"""The engine: one `InstrumentState` per (venue, instrument), fed typed events, emitting payloads.

Synchronous and CPU-only; the session (live) or the replay loop (offline) calls `handle` inline
for every event, so there is no queue between parsing and the books to overflow. For each event
it updates the book under its sync rule and the metric accumulators, then hands the encoded
payload to `sink(topic, payload_bytes)`, which must not block (publishers queue and drop).

It never computes a metric from a book known wrong: a gap, a crossed book or a bad frame makes
the book INVALID, publishes a status, and returns the symbol so the caller can resync it.

Each venue's clock offset (`ts_recv - ts_exchange`, a running median over its recent book and trade frames, see
`flowgauge.metrics.clock`) is estimated here, for both cores alike; while it is beyond the venue's bound every
metrics payload of that venue carries `CLOCK_SKEW`.

A book whose instrument expired or was delisted is retired (`retire`, or an `InstrumentRetired` event from the
venue's stream): it publishes one final status (state RETIRED) and then nothing, asks for no resync, and leaves the
read side used by readiness and /metrics (`states`, `latest_signals`, `book_states`); `status` still lists it.

With `publish_trades`, every normalized trade and every liquidation is also published as a trade record on
`flowgauge.v1.trades.<venue>.<slug>` (schema/trade.v1.json): the inputs, for strategies that want them.

With `aggregates` (a `metrics.aggregate.CrossVenueAggregates`), every metrics payload of a perpetual is also handed
to it, and the cross-venue aggregates it finds due (on exchange-time multiples, so replay is deterministic) are
published on `flowgauge.v1.agg.<BASE>` (schema/agg.v1.json), each just before the payload that made it due.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import msgspec

from flowgauge import core
from flowgauge.book.l2 import DEFAULT_MAX_LEVELS
from flowgauge.book.sequencing import snapshots_only
from flowgauge.book.sync import ApplyResult, SequenceRule, consecutive_ids
from flowgauge.connectors.levels import MAX_LEVEL_VALUE
from flowgauge.logs import BurstLimiter, event
from flowgauge.metrics.accumulator import InstrumentMetrics
from flowgauge.metrics.aggregate import CrossVenueAggregates
from flowgauge.metrics.bar_feed import BarSpec, InstrumentBars
from flowgauge.metrics.clock import ClockOffset
from flowgauge.metrics.extended import ExtendedMetrics
from flowgauge.metrics.families import DEFAULT_FAMILIES, family_fields, resolve
from flowgauge.metrics.families import LIQUIDATION_KEYS as LIQUIDATION_KEYS  # re-exported: tests name it here
from flowgauge.metrics.params import MetricParams
from flowgauge.metrics.windows import LATE_HORIZON_NS
from flowgauge.publish import codec, topics
from flowgauge.types import (
    BadFrame,
    BestQuote,
    BookDelta,
    BookSnapshot,
    BookState,
    FundingRate,
    Instrument,
    InstrumentRetired,
    InvalidReason,
    Liquidation,
    LongShortRatio,
    OpenInterest,
    RetireReason,
    Trade,
)

log = logging.getLogger(__name__)

SCHEMA = "flowgauge.v1"

# Venues whose liquidation stream is a sample, not a tape (Binance @forceOrder: the latest liquidation per
# symbol per second): their liquidation payloads carry SAMPLED_INPUT (metrics.md 6.5).
SAMPLED_LIQUIDATION_VENUES = frozenset({"binanceusdm"})

Sink = Callable[[str, bytes], None]

_ENVELOPE_KEYS = (
    "schema", "venue", "symbol", "instrument", "trigger", "seq", "book_seq", "book_state", "ts_exchange", "ts_recv",
    "ts_publish",
)  # fmt: skip


def payload_template(families: tuple[str, ...]) -> dict[str, Any]:
    """Every key of a metrics payload publishing `families` (resolved), in publication order, all None: the
    envelope, then each family's fields (metrics.families)."""
    return dict.fromkeys((*_ENVELOPE_KEYS, *family_fields(families)))


_DEFAULT_RESOLVED = resolve(DEFAULT_FAMILIES)
_PAYLOAD_TEMPLATE: dict[str, Any] = payload_template(_DEFAULT_RESOLVED)
# Trade records carry the taker side as text (friendlier than +1/-1 in any language).
_SIDE_TEXT = {1: "buy", -1: "sell"}
# The order that closed a liquidated position: a long is closed by a sell, a short by a buy.
_CLOSING_SIDE = {"long": "sell", "short": "buy"}
_STATE_TEXT = {state: state.value for state in BookState}  # an enum's .value is a slow descriptor lookup
_VALID_TEXT = BookState.VALID.value

# How far an event's exchange time may run ahead of its receipt before the engine replaces it with the receive
# time (Engine._clamp_future). Far beyond any real clock offset or the simulators' clock faults (seconds).
FUTURE_LIMIT_NS = 60 * 1_000_000_000
_TIMED = frozenset({BookSnapshot, BookDelta, BestQuote, Trade, OpenInterest, FundingRate, Liquidation, LongShortRatio})
_encode = codec.encode
CLOCK_SKEW = "CLOCK_SKEW"
DEFAULT_CLOCK_SKEW_MAX_S = 2.0


class EngineHooks(Protocol):
    """What the engine reports for telemetry. `app` adapts it to Prometheus instruments."""

    def resync(self, venue: str, symbol: str, reason: str) -> None: ...
    def bad_frame(self, venue: str) -> None: ...
    def published(self, venue: str, ts_exchange: int, ts_recv: int, ts_publish: int) -> None: ...
    def conflated(self, venue: str, shed: int) -> None: ...
    def retired(self, venue: str, symbol: str) -> None: ...


class InstrumentState:
    """Book, sync state, metric accumulators and publish bookkeeping of one instrument."""

    __slots__ = (
        "bar_seq",
        "bars",
        "bars_topic",
        "book_topic",
        "envelope",
        "instrument",
        "last_book_publish",
        "latest",
        "metrics",
        "pending",
        "pending_shed",
        "publish_seq",
        "snapshot_stream",
        "status_topic",
        "sync",
        "throttled",
        "trades_topic",
        "venue_clock",
    )

    def __init__(
        self,
        instrument: Instrument,
        rule: SequenceRule,
        buffer_deltas: bool = False,
        core_name: str = core.PYTHON,
        book_max_levels: int = DEFAULT_MAX_LEVELS,
        venue_clock: ClockOffset | None = None,
        families: tuple[str, ...] | None = None,
        metric_params: MetricParams | None = None,
        bars: BarSpec | None = None,
    ) -> None:
        self.instrument = instrument
        # The metric families this instrument publishes (resolved, see metrics.families); None: the default.
        families = families if families is not None else resolve(DEFAULT_FAMILIES)
        compiled = core_name == core.COMPILED
        extended = ExtendedMetrics.build(families, instrument, metric_params or MetricParams(), compiled)
        # The venue's clock offset estimate, shared by every instrument of the venue (see Engine).
        self.venue_clock = venue_clock if venue_clock is not None else ClockOffset(DEFAULT_CLOCK_SKEW_MAX_S)
        self.sync = core.new_sync(core_name, rule, buffer_deltas, book_max_levels)
        # Venues that push a full book every time (Hyperliquid): consecutive snapshots are ordinary
        # transitions, so OFI flows across them; elsewhere a snapshot mid-stream is a reset.
        self.snapshot_stream = rule is snapshots_only
        if core_name == core.COMPILED:
            from flowgauge.metrics.compiled import CompiledInstrumentMetrics

            self.metrics: InstrumentMetrics = CompiledInstrumentMetrics(instrument, extended)
        else:
            self.metrics = InstrumentMetrics(instrument, extended)
        self.book_topic = topics.book_topic(instrument.venue, instrument.symbol)
        # The payload template with this instrument's constant envelope already in place (see Engine._emit).
        self.envelope: dict[str, Any] = (
            _PAYLOAD_TEMPLATE if families == _DEFAULT_RESOLVED else payload_template(families)
        ).copy()
        self.envelope.update(
            schema=SCHEMA, venue=instrument.venue, symbol=instrument.symbol, instrument=instrument.venue_id
        )
        self.status_topic = topics.status_topic(instrument.venue, instrument.symbol)
        self.trades_topic = topics.trades_topic(instrument.venue, instrument.symbol)
        # Clock bars (publish.bars): None when off.
        self.bars = InstrumentBars(bars.interval_s, bars.z_half_life_s, bars.z_min_samples) if bars else None
        self.bars_topic = topics.bars_topic(instrument.venue, instrument.symbol)
        self.bar_seq = 0
        self.publish_seq = 0
        self.last_book_publish = 0
        self.throttled = 0
        # Backlog conflation: the (ts_exchange, ts_recv) of the book payload deferred to the end of the loop
        # turn, and how many earlier book payloads of this turn it replaced (shed, never published).
        self.pending: tuple[int, int] | None = None
        self.pending_shed = 0
        self.latest: dict[str, Any] | None = None


class Engine:
    """Routes events to instrument states and publishes what they compute.

    Backlog conflation (load-shedding): while `conflate` is True (the caller sets it for the events of a frame
    that waited too long, see `flowgauge.conflation`), every book message is still applied and its flow
    accumulated, but its payload is deferred: a later book payload of the same instrument replaces it (the
    replaced one is shed and counted), and `flush_conflated()` at the end of the loop turn publishes what
    is left, flagged CONFLATED when it replaced any. A deferred payload is published before anything else
    touches its instrument (another payload, a trade its windows would count, an invalidation), so it always
    equals what the unconflated path would have published for that book state, CONFLATED aside, and `ofi_l1`,
    which sums the L1 flow since the previous published payload (so it also holds the shed payloads' flow).

    Args:
        sink: `sink(topic, payload_bytes)`; called synchronously, must never block.
        min_interval_ms: per-instrument throttle for book-triggered payloads (0 = publish every one).
        clock: ns wall clock for `ts_publish` (injected so replays can be compared).
        hooks: telemetry callbacks, optional.
        book_max_levels: levels kept per book side (beyond it the worst is dropped and counted).
        core_name: "compiled" or "python"; None = `core.active_core()` (see flowgauge.core).
        publish_trades: also publish every trade and liquidation as a trade record on the instrument's
            trades topic (config `publish.trades`); off, nothing goes to trades topics.
        clock_skew_max_s: the bound on a venue's clock offset beyond which its payloads carry CLOCK_SKEW (config
            `venues.<id>.clock_skew_max_s`): one number for every venue, or venue -> bound (others: 2 s).
        aggregates: cross-venue aggregation (config `publish.aggregates`); None publishes no aggregates.
        families: the metric families every payload carries (config `publish.families`; "all" allowed); the
            fields of the others are neither computed nor published. Raises `UnknownFamily` for a bad name.
        metric_params: the families' parameters (config `metrics`); None = metrics.md section 9's defaults.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        min_interval_ms: float = 0.0,
        clock: Callable[[], int] = time.time_ns,
        hooks: EngineHooks | None = None,
        book_max_levels: int = DEFAULT_MAX_LEVELS,
        core_name: str | None = None,
        publish_trades: bool = False,
        clock_skew_max_s: float | Mapping[str, float] = DEFAULT_CLOCK_SKEW_MAX_S,
        aggregates: CrossVenueAggregates | None = None,
        families: Iterable[str] = DEFAULT_FAMILIES,
        metric_params: MetricParams | None = None,
        bars: BarSpec | None = None,
    ) -> None:
        self.core = core_name or core.active_core()
        self.bars = bars
        self.families = resolve(families)
        self.metric_params = metric_params or MetricParams()
        self.aggregates = aggregates
        self._clock_bounds = clock_skew_max_s
        self._venue_clocks: dict[str, ClockOffset] = {}
        self.publish_trades = publish_trades
        if self.core == core.COMPILED:
            core.compiled_module()  # fail here, not on the first instrument
        self.book_max_levels = book_max_levels
        self._sink = sink
        self._min_interval_ns = int(min_interval_ms * 1_000_000)
        self._clock = clock
        self._hooks = hooks
        self._states: dict[tuple[str, str], InstrumentState] = {}
        # Retired books leave _states (every event of theirs then finds nothing) and wait here for /status only.
        self._retired: dict[tuple[str, str], InstrumentState] = {}
        self.conflate = False  # defer book payloads (see the class docstring)
        self._deferred: list[InstrumentState] = []  # states with a pending payload, in deferral order
        self.conflated = 0  # book payloads shed by conflation
        self._bad_frame_log = BurstLimiter()
        self.bad_frames = 0
        self.future_timestamps = 0  # events whose exchange time was replaced (see _clamp_future)
        self._handlers: dict[type, Callable[[Any], str | None]] = {
            BookDelta: self._on_delta_compiled if self.core == core.COMPILED else self._on_delta,
            BookSnapshot: self._on_snapshot,
            Trade: self._on_trade,
            BestQuote: self._on_best_quote,
            OpenInterest: self._on_open_interest,
            FundingRate: self._on_funding,
            Liquidation: self._on_liquidation,
            LongShortRatio: self._on_long_short,
            BadFrame: self._on_bad_frame,
            InstrumentRetired: self._on_retired,
        }

    # ----------------------------------------------------------------- setup and read side

    def add_instrument(
        self, instrument: Instrument, rule: SequenceRule = consecutive_ids, buffer_deltas: bool = False
    ) -> None:
        """Track `instrument` with its venue's continuity rule; `buffer_deltas` for REST-snapshot venues."""
        key = (instrument.venue, instrument.symbol)
        if key not in self._states and key not in self._retired:
            self._states[key] = InstrumentState(
                instrument, rule, buffer_deltas, self.core, self.book_max_levels, self._venue_clock(instrument.venue),
                self.families, self.metric_params, self.bars,
            )  # fmt: skip
            if self.aggregates is not None:
                self._track_aggregate(instrument)

    def _track_aggregate(self, instrument: Instrument) -> None:
        """Join the instrument's base group, unless its base cannot name a topic (then it is not aggregated)."""
        try:
            topics.agg_topic(instrument.base.upper())
        except ValueError:
            return
        assert self.aggregates is not None
        self.aggregates.track(instrument.venue, instrument.symbol, instrument.base)

    def _venue_clock(self, venue: str) -> ClockOffset:
        clock = self._venue_clocks.get(venue)
        if clock is None:
            bounds = self._clock_bounds
            bound = bounds if isinstance(bounds, int | float) else bounds.get(venue, DEFAULT_CLOCK_SKEW_MAX_S)
            clock = self._venue_clocks[venue] = ClockOffset(bound)
        return clock

    def clock_offsets(self) -> Iterator[tuple[str, float]]:
        """(venue, estimated clock offset in seconds: ts_recv - ts_exchange) for every venue with an estimate."""
        for venue, clock in self._venue_clocks.items():
            if clock.offset_ns is not None:
                yield venue, clock.offset_ns / 1e9

    def states(self) -> Iterator[InstrumentState]:
        """Every book that is not retired."""
        return iter(self._states.values())

    def state(self, venue: str, symbol: str) -> InstrumentState | None:
        """The live (not retired) book of (venue, symbol), None when there is none."""
        return self._states.get((venue, symbol))

    def is_retired(self, venue: str, symbol: str) -> bool:
        return (venue, symbol) in self._retired

    def latest_signals(self) -> Iterator[tuple[str, str, Mapping[str, object]]]:
        for (venue, symbol), state in self._states.items():
            if state.latest is not None:
                yield venue, symbol, state.latest

    def book_states(self) -> Iterator[tuple[str, str, str]]:
        for (venue, symbol), state in self._states.items():
            yield venue, symbol, state.sync.state.value

    def ready(self) -> bool:
        """At least one book is VALID (retired books never are)."""
        return any(s.sync.valid for s in self._states.values())

    def status(self) -> dict[str, Any]:
        venues: dict[str, dict[str, Any]] = {}
        for (venue, symbol), state in (*self._states.items(), *self._retired.items()):
            sync = state.sync
            venues.setdefault(venue, {})[symbol] = {
                "instrument": state.instrument.venue_id,
                "state": sync.state.value,
                "reason": sync.reason.value if sync.reason else None,
                "detail": sync.detail,
                "book_seq": sync.book.seq,
                "levels": [len(sync.book.bids), len(sync.book.asks)],
                "levels_dropped": sync.book.dropped_levels,
                "resyncs": sync.resyncs,
                "gaps": sync.gaps,
                "stale_dropped": sync.stale_dropped,
                "published": state.publish_seq,
                "throttled": state.throttled,
                "last_ts_exchange": state.latest["ts_exchange"] if state.latest else None,
            }
        return {"venues": venues, "bad_frames": self.bad_frames, "future_timestamps": self.future_timestamps,
                "core": self.core}

    # ----------------------------------------------------------------- event intake

    def handle(self, event_: object) -> str | None:
        """Apply one event. Returns the symbol whose book needs a resync, if any."""
        kind = type(event_)
        handler = self._handlers.get(kind)
        if handler is None:
            raise TypeError(f"engine cannot handle {type(event_).__name__}")
        if kind in _TIMED and event_.ts_exchange - event_.ts_recv > FUTURE_LIMIT_NS:  # type: ignore[attr-defined]
            event_ = self._clamp_future(event_)
        return handler(event_)

    def _clamp_future(self, event_: Any) -> Any:
        """An exchange time implausibly far ahead of its receipt (a venue bug, a corrupt frame) is replaced by the
        receive time. Kept as sent, every window would treat it as the newest time seen and drop each later event
        as too late, publishing made-up zeros until the wall clock caught up with the bogus stamp (a year ahead:
        a year). The event itself (a book update, a trade) is real and is applied; counted and logged."""
        self.future_timestamps += 1
        suppressed = self._bad_frame_log.allow(f"future:{event_.venue}")
        if suppressed is not None:
            ahead_s = min(event_.ts_exchange - event_.ts_recv, 10**18) // 1_000_000_000  # ints: a stamp may be huge
            event(log, logging.WARNING, "exchange_time_in_future", venue=event_.venue,
                  symbol=getattr(event_, "symbol", None), ahead_s=ahead_s,
                  detail="exchange time replaced by the receive time", suppressed_since_last=suppressed)
        return msgspec.structs.replace(event_, ts_exchange=event_.ts_recv)

    def handle_all(self, events: Iterable[object]) -> list[str]:
        resync = []
        for item in events:
            symbol = self.handle(item)
            if symbol is not None:
                resync.append(symbol)
        return resync

    def invalidate(self, venue: str, symbols: Iterable[str], reason: InvalidReason, detail: str) -> None:
        """Mark books wrong from outside (the connection carrying them dropped)."""
        now = self._clock()
        for symbol in symbols:
            state = self._states.get((venue, symbol))
            if state is None:
                continue
            if state.pending is not None:
                self._flush(state)
            result = state.sync.invalidate(reason, detail)
            if result.changed:
                ts = state.sync.book.ts_exchange or now
                state.metrics.on_book_invalid(ts, reason)
                if state.bars is not None:
                    self._publish_bars(state, state.bars.on_invalid(ts, reason is InvalidReason.GAP))
                self._report_invalid(state, ts, now)

    def retire(
        self, venue: str, symbol: str, reason: RetireReason, detail: str, ts_exchange: int | None = None
    ) -> bool:
        """The instrument stopped trading (expired, delisted): publish its final status (state RETIRED), log it once,
        tell the hooks (its telemetry series go), and ignore everything of it from now on. Returns True when this
        call retired it (False: unknown or already retired)."""
        key = (venue, symbol)
        state = self._states.get(key)
        if state is None:
            return False
        self._shed_pending(state)  # its book is gone: a deferred payload can no longer be published
        now = self._clock()
        ts = ts_exchange or state.sync.book.ts_exchange or now
        result = state.sync.retire(reason, detail)
        if not result.changed:
            return False
        del self._states[key]
        self._retired[key] = state
        event(log, logging.INFO, "book_retired", venue=venue, symbol=symbol, reason=reason.value, detail=detail)
        self._publish_status(state, ts, now)
        state.latest = None  # no more signal series for it
        if self.aggregates is not None:
            self.aggregates.remove(venue, symbol)
        if self._hooks is not None:
            self._hooks.retired(venue, symbol)
        return True

    # ----------------------------------------------------------------- per event kind

    def _on_retired(self, retired: InstrumentRetired) -> str | None:
        self.retire(retired.venue, retired.symbol, retired.reason, retired.detail, retired.ts_exchange)
        return None

    def _on_snapshot(self, snapshot: BookSnapshot) -> str | None:
        state = self._states.get((snapshot.venue, snapshot.symbol))
        if state is None:
            return None
        state.venue_clock.observe(snapshot.ts_recv, snapshot.ts_exchange)
        if state.pending is not None and not (self.conflate and state.snapshot_stream):
            self._flush(state)  # this snapshot resets the book (or nothing is being conflated)
        was_valid = state.sync.valid
        stale_before = state.sync.stale_snapshots
        result = state.sync.on_snapshot(snapshot)
        if state.sync.stale_snapshots != stale_before:
            # Older than the live book, so BookSync ignored it (counted): the book is VALID and untouched, and
            # nothing is reset or resynced (a resync would fetch another snapshot behind the live stream).
            return None
        if was_valid and not state.snapshot_stream:
            # A snapshot mid-stream is a venue reset: no flow across it.
            state.metrics.on_book_invalid(snapshot.ts_exchange, InvalidReason.RESET)
            if state.bars is not None:
                self._publish_bars(state, state.bars.on_invalid(snapshot.ts_exchange, False))
        if result.applied:
            if result.changed:
                self._publish_status(state, snapshot.ts_exchange, snapshot.ts_recv)
            # The book state is the snapshot plus any buffered deltas it caught up on: its time is the last
            # message applied (the book's), and that is the time this payload and its windows carry.
            ts_book = state.sync.book.ts_exchange
            state.metrics.on_book(state.sync.book, ts_book)
            if state.bars is not None:
                self._bar_book(state, ts_book)
            self._publish(state, "book", ts_book, snapshot.ts_recv)
            return None
        self._shed_pending(state)
        return self._after_invalid(state, snapshot.ts_exchange, snapshot.ts_recv)

    def _on_delta(self, delta: BookDelta) -> str | None:
        state = self._states.get((delta.venue, delta.symbol))
        if state is None:
            return None
        state.venue_clock.observe(delta.ts_recv, delta.ts_exchange)
        if state.pending is not None and not self.conflate:
            self._flush(state)
        result = state.sync.on_delta(delta)
        if result.applied:
            state.metrics.on_book(state.sync.book, delta.ts_exchange)
            if state.bars is not None:
                self._bar_book(state, delta.ts_exchange)
            self._publish(state, "book", delta.ts_exchange, delta.ts_recv)
            return None
        return self._delta_not_applied(state, delta, result)

    def _delta_not_applied(self, state: InstrumentState, delta: BookDelta, result: ApplyResult) -> str | None:
        if result.changed:
            # The deferred state's book is gone (a gap or a crossed book clears it): shed, the status says why.
            self._shed_pending(state)
            return self._after_invalid(state, delta.ts_exchange, delta.ts_recv)
        return None

    def _on_delta_compiled(self, delta: BookDelta) -> str | None:
        """`_on_delta` for the compiled core, its common case (nothing deferred, no throttle, the delta applied
        to a VALID book) without the intermediate calls: the same steps in the same order as `_on_delta` ->
        `_publish` -> `_emit` for a VALID book's payload, so the bytes are the same (tests/conformance). The
        rest takes the general path."""
        state = self._states.get((delta.venue, delta.symbol))
        if state is None or state.pending is not None or self.conflate or self._min_interval_ns:
            return self._on_delta(delta)
        venue_clock = state.venue_clock
        venue_clock.observe(delta.ts_recv, delta.ts_exchange)
        sync = state.sync
        result = sync.on_delta(delta)
        if not result.applied:
            return self._delta_not_applied(state, delta, result)
        ts_exchange = delta.ts_exchange
        book = sync.book
        state.publish_seq += 1
        payload: dict[str, Any] = state.envelope.copy()
        payload["trigger"] = "book"
        payload["seq"] = state.publish_seq
        payload["book_seq"] = book.seq
        payload["book_state"] = _VALID_TEXT
        payload["ts_exchange"] = ts_exchange
        payload["ts_recv"] = delta.ts_recv
        payload["ts_publish"] = 0
        # on_book, then fields (what _on_delta and _emit call), in one call
        state.metrics.book_payload(book, ts_exchange, payload)  # type: ignore[attr-defined]  # compiled metrics
        if state.bars is not None:  # as _on_delta: the bars this state closes go out before its payload
            self._bar_book(state, ts_exchange)
        if venue_clock.skewed:  # as _emit adds it
            payload["quality"] = sorted({*payload["quality"], CLOCK_SKEW})
        ts_publish = self._clock()
        payload["ts_publish"] = ts_publish
        try:
            encoded = _encode(payload)
        except (TypeError, ValueError) as exc:
            self._encode_failed(state.instrument.venue, exc)
            return None
        state.latest = payload
        if self.aggregates is not None:
            self._publish_aggregates(state, payload)
        self._sink(state.book_topic, encoded)
        if self._hooks is not None:
            self._hooks.published(state.instrument.venue, ts_exchange, delta.ts_recv, ts_publish)
        return None

    def _after_invalid(self, state: InstrumentState, ts_exchange: int, ts_recv: int) -> str:
        reason = state.sync.reason
        state.metrics.on_book_invalid(ts_exchange, reason if isinstance(reason, InvalidReason) else InvalidReason.RESET)
        if state.bars is not None:
            self._publish_bars(state, state.bars.on_invalid(ts_exchange, reason is InvalidReason.GAP))
        self._report_invalid(state, ts_exchange, ts_recv)
        return state.instrument.symbol

    def _report_invalid(self, state: InstrumentState, ts_exchange: int, ts_recv: int) -> None:
        sync = state.sync
        if self.aggregates is not None:
            self.aggregates.invalidate(state.instrument.venue, state.instrument.symbol)
        reason = sync.reason.value if sync.reason else "UNKNOWN"
        instrument = state.instrument
        event(
            log,
            logging.WARNING,
            "book_invalid",
            venue=instrument.venue,
            symbol=instrument.symbol,
            reason=reason,
            detail=sync.detail,
        )
        if self._hooks is not None:
            self._hooks.resync(instrument.venue, instrument.symbol, reason.lower())
        self._publish_status(state, ts_exchange, ts_recv)

    def _on_best_quote(self, quote: BestQuote) -> str | None:
        """A best-quote stream state: the L1 accumulators only (metrics.ofi_l1), no payload of its own. A quote whose
        prices or sizes are out of range is counted as a bad frame (the book is not touched)."""
        state = self._states.get((quote.venue, quote.symbol))
        if state is None or not self._sane_quote(quote):
            return None
        pending = state.pending
        if pending is not None and not pending[0] < quote.ts_exchange <= pending[0] + LATE_HORIZON_NS:
            # The deferred payload's ofi_l1 would count this quote (or it moves the windows' late horizon):
            # publish it first, as for a trade.
            self._flush(state)
        state.metrics.on_best_quote(quote)
        return None

    def _sane_quote(self, quote: BestQuote) -> bool:
        """Each side empty (None) or a positive price and a size >= 0 below MAX_LEVEL_VALUE (as `_sane`); anything
        else is counted as a bad frame and reaches no accumulator (the parsers check too; this guards the rest)."""
        sides = ((quote.bid_px, quote.bid_sz), (quote.ask_px, quote.ask_sz))
        if all(px is None or (0.0 < px < MAX_LEVEL_VALUE and sz is not None and 0.0 <= sz < MAX_LEVEL_VALUE)
               for px, sz in sides):  # fmt: skip
            return True
        self.bad_frames += 1
        if self._hooks is not None:
            self._hooks.bad_frame(quote.venue)
        if self._bad_frame_log.allow(f"best_quote:{quote.venue}") is not None:
            event(log, logging.WARNING, "bad_best_quote_values", venue=quote.venue, symbol=quote.symbol)
        return False

    def _on_trade(self, trade: Trade) -> str | None:
        state = self._states.get((trade.venue, trade.symbol))
        if state is not None and self._sane(trade.venue, "trade", trade.price, trade.size):
            state.venue_clock.observe(trade.ts_recv, trade.ts_exchange)
            pending = state.pending
            if pending is not None and not pending[0] < trade.ts_exchange <= pending[0] + LATE_HORIZON_NS:
                # The deferred payload's windows would count this trade (or it moves their late horizon):
                # publish it first. A trade stamped after it (held back from its windows) changes nothing.
                self._flush(state)
            state.metrics.on_trade(trade)
            if state.bars is not None and not trade.forced:
                state.bars.on_trade(trade.ts_exchange, trade.side, trade.size)
            if self.publish_trades:
                self._publish_trade_record(
                    state, "trade", _SIDE_TEXT.get(trade.side), trade.price, trade.size, trade.trade_id,
                    trade.forced, None, trade.ts_exchange, trade.ts_recv,
                )
        return None

    def _on_open_interest(self, oi: OpenInterest) -> str | None:
        state = self._states.get((oi.venue, oi.symbol))
        if state is not None and self._in_range(oi.venue, "open_interest", oi.open_interest):
            if state.pending is not None:
                self._flush(state)
            state.metrics.on_open_interest(oi)
            self._publish(state, "open_interest", oi.ts_exchange, oi.ts_recv)
        return None

    def _on_funding(self, funding: FundingRate) -> str | None:
        state = self._states.get((funding.venue, funding.symbol))
        if state is not None and self._in_range(
            funding.venue, "funding", funding.rate, funding.interval_hours, funding.mark_price, funding.index_price
        ):
            if state.pending is not None:
                self._flush(state)
            state.metrics.on_funding(funding)
            self._publish(state, "funding", funding.ts_exchange, funding.ts_recv)
        return None

    def _on_liquidation(self, liquidation: Liquidation) -> str | None:
        state = self._states.get((liquidation.venue, liquidation.symbol))
        if state is not None and self._sane(liquidation.venue, "liquidation", liquidation.price, liquidation.size):
            if state.pending is not None:
                self._flush(state)
            state.metrics.on_liquidation(liquidation)
            # Never throttled or conflated (that is book payloads only): straight to _emit, which says which one.
            self._emit(state, "liquidation", liquidation.ts_exchange, liquidation.ts_recv, False, liquidation)
            if self.publish_trades:
                side = liquidation.liquidated_side
                self._publish_trade_record(
                    state, "liquidation", _CLOSING_SIDE.get(side), liquidation.price, liquidation.size, None, True,
                    side, liquidation.ts_exchange, liquidation.ts_recv,
                )
        return None

    def _on_long_short(self, ratio: LongShortRatio) -> str | None:
        state = self._states.get((ratio.venue, ratio.symbol))
        if state is not None and self._in_range(ratio.venue, "long_short", ratio.ratio):
            if state.pending is not None:
                self._flush(state)
            state.metrics.on_long_short(ratio)
            self._publish(state, "long_short", ratio.ts_exchange, ratio.ts_recv)
        return None

    def _on_bad_frame(self, bad: BadFrame) -> str | None:
        self.bad_frames += 1
        if self._hooks is not None:
            self._hooks.bad_frame(bad.venue)
        suppressed = self._bad_frame_log.allow(bad.venue)
        if suppressed is not None:
            event(
                log,
                logging.WARNING,
                "bad_frame",
                venue=bad.venue,
                symbol=bad.symbol,
                reason=bad.reason,
                suppressed_since_last=suppressed,
            )
        if not bad.touches_book or bad.symbol is None:
            return None
        state = self._states.get((bad.venue, bad.symbol))
        if state is None:
            return None
        if state.pending is not None:
            self._flush(state)
        # The frame carried a book update we could not apply: the book may now be missing it.
        result = state.sync.invalidate(bad.invalid_reason or InvalidReason.BAD_FRAME, bad.reason)
        if not result.changed:
            return None
        ts_exchange = state.sync.book.ts_exchange
        return self._after_invalid(state, ts_exchange, bad.ts_recv)

    # ----------------------------------------------------------------- publishing

    def flush_conflated(self) -> None:
        """End of a loop turn: publish every deferred book payload."""
        deferred = self._deferred
        if not deferred:
            return
        self._deferred = []
        for state in deferred:
            if state.pending is not None:
                self._flush(state)

    def _flush(self, state: InstrumentState) -> None:
        pending = state.pending
        if pending is None:
            return
        state.pending = None
        shed = state.pending_shed
        state.pending_shed = 0
        self._emit(state, "book", pending[0], pending[1], shed > 0)

    def _shed_pending(self, state: InstrumentState) -> None:
        """The deferred payload can no longer be built (its book state is gone): count it as shed too (the ones
        it replaced were counted when it replaced them)."""
        if state.pending is not None:
            state.pending = None
            state.pending_shed = 0
            self._count_shed(state, 1)

    def _count_shed(self, state: InstrumentState, shed: int) -> None:
        self.conflated += shed
        if self._hooks is not None:
            self._hooks.conflated(state.instrument.venue, shed)

    def _publish(self, state: InstrumentState, trigger: str, ts_exchange: int, ts_recv: int) -> None:
        if trigger == "book":
            if self._min_interval_ns:
                if ts_recv - state.last_book_publish < self._min_interval_ns:
                    state.throttled += 1
                    return
                state.last_book_publish = ts_recv
            if self.conflate:
                if state.pending is None:
                    self._deferred.append(state)
                else:
                    state.pending_shed += 1
                    self._count_shed(state, 1)
                state.pending = (ts_exchange, ts_recv)
                return
        self._emit(state, trigger, ts_exchange, ts_recv, False)

    def _emit(
        self,
        state: InstrumentState,
        trigger: str,
        ts_exchange: int,
        ts_recv: int,
        conflated: bool,
        liquidation: Liquidation | None = None,
    ) -> None:
        sync = state.sync
        book_state = sync.state
        book = sync.book if book_state is BookState.VALID else None
        state.publish_seq += 1
        instrument = state.instrument
        # A copy of a dict that already holds every key in publication order: filling it never resizes it (a
        # literal of the envelope grew three times while the metrics added their fields), and the key order,
        # part of the published bytes, stays the template's. The instrument's constant envelope is in it already.
        payload: dict[str, Any] = state.envelope.copy()
        payload["trigger"] = trigger
        payload["seq"] = state.publish_seq
        payload["book_seq"] = sync.book.seq if book is not None else None
        payload["book_state"] = _STATE_TEXT[book_state]
        payload["ts_exchange"] = ts_exchange
        payload["ts_recv"] = ts_recv
        payload["ts_publish"] = 0
        state.metrics.fields(book, ts_exchange, trigger, payload)
        if liquidation is not None:
            payload["liq_side"] = liquidation.liquidated_side
            payload["liq_price"] = liquidation.price
            payload["liq_size"] = liquidation.size
            payload["liq_notional"] = liquidation.price * liquidation.size
        # Rare extras on top of the metric flags; the common case (a VALID book) allocates nothing here.
        invalid_flag = sync.reason.value if book is None and sync.reason is not None else None
        sampled = trigger == "liquidation" and instrument.venue in SAMPLED_LIQUIDATION_VENUES
        skewed = state.venue_clock.skewed
        if invalid_flag is not None or sampled or conflated or skewed:
            extra = {invalid_flag} if invalid_flag is not None else set()
            if sampled:
                extra.add("SAMPLED_INPUT")
            if conflated:
                extra.add("CONFLATED")
            if skewed:
                extra.add(CLOCK_SKEW)
            quality = payload.get("quality")
            if isinstance(quality, list):
                payload["quality"] = sorted({*quality, *extra})
        ts_publish = self._clock()
        payload["ts_publish"] = ts_publish
        try:
            encoded = codec.encode(payload)
        except (TypeError, ValueError) as exc:
            # A value JSON cannot carry (an out-of-range venue timestamp): drop this payload, count it.
            self._encode_failed(instrument.venue, exc)
            return
        state.latest = payload
        if self.aggregates is not None:
            self._publish_aggregates(state, payload)
        self._sink(state.book_topic, encoded)
        if self._hooks is not None:
            self._hooks.published(instrument.venue, ts_exchange, ts_recv, ts_publish)

    def _publish_aggregates(self, state: InstrumentState, payload: Mapping[str, Any]) -> None:
        """Hand the payload to the aggregates and publish the aggregate it makes due, if any."""
        assert self.aggregates is not None
        instrument = state.instrument
        for base, aggregate in self.aggregates.observe(instrument.venue, instrument.symbol, payload):
            aggregate["ts_publish"] = self._clock()
            try:
                encoded = codec.encode(aggregate)
            except (TypeError, ValueError) as exc:
                self._encode_failed(instrument.venue, exc)
                continue
            self._sink(topics.agg_topic(base), encoded)

    def _bar_book(self, state: InstrumentState, ts_exchange: int) -> None:
        """Hand the applied VALID book state to the instrument's bars and publish the bars it closed."""
        assert state.bars is not None
        book = state.sync.book
        bid = book.bids.best()
        ask = book.asks.best()
        closed = state.bars.on_book(
            ts_exchange, state.metrics.last_e, bid[0] if bid is not None else None, ask[0] if ask is not None else None
        )
        if closed:
            self._publish_bars(state, closed)

    def close_bars(self, now_ns: int, delay_ns: int) -> int:
        """The daemon's bar timer: close, for every instrument, the bars that ended at least `delay_ns` before now
        on its venue's clock (`now_ns` - the venue's clock offset estimate), and publish them. Returns how many were
        published. Replay never calls it: its bars close on events only."""
        published = 0
        for state in self._states.values():
            bars = state.bars
            if bars is None:
                continue
            offset = state.venue_clock.offset_ns or 0
            closed = bars.close_until(now_ns - offset - delay_ns)
            if closed:
                published += self._publish_bars(state, closed)
        return published

    def _publish_bars(self, state: InstrumentState, closed: list[dict[str, Any]]) -> int:
        """Publish closed bars on the instrument's bars topic (schema/bars.v1.json), oldest first."""
        instrument = state.instrument
        published = 0
        for bar in closed:
            state.bar_seq += 1
            payload: dict[str, Any] = {
                "schema": SCHEMA, "venue": instrument.venue, "symbol": instrument.symbol,
                "instrument": instrument.venue_id, "seq": state.bar_seq, **bar, "ts_publish": self._clock(),
            }  # fmt: skip
            try:
                encoded = codec.encode(payload)
            except (TypeError, ValueError) as exc:
                self._encode_failed(instrument.venue, exc)
                continue
            self._sink(state.bars_topic, encoded)
            published += 1
        return published

    def publish_heartbeats(self) -> int:
        """Publish the current status of every tracked book again, marked `"heartbeat": true` (the daemon's
        periodic heartbeat; replay never calls it). Its `ts_recv` and `ts_publish` are now, its `ts_exchange`
        the book's last exchange time (now before the book had any). Returns how many were published."""
        now = self._clock()
        published = 0
        for state in self._states.values():
            ts_exchange = state.sync.book.ts_exchange or now
            if self._publish_status(state, ts_exchange, now, heartbeat=True):
                published += 1
        return published

    def _publish_status(self, state: InstrumentState, ts_exchange: int, ts_recv: int, heartbeat: bool = False) -> bool:
        """Publish the book's status; `heartbeat` False for a sync-state change. `ts_last_update` is the `ts_recv`
        of the instrument's last metrics payload (what the book topic's current value carries), null before one:
        deterministic in replay, and on the daemon's clock like the heartbeat's own `ts_publish`."""
        sync = state.sync
        instrument = state.instrument
        latest = state.latest
        payload = {
            "schema": SCHEMA,
            "venue": instrument.venue,
            "symbol": instrument.symbol,
            "instrument": instrument.venue_id,
            "state": sync.state.value,
            "reason": sync.reason.value if sync.reason else None,
            "detail": sync.detail,
            "resyncs": sync.resyncs,
            "heartbeat": heartbeat,
            "ts_last_update": latest["ts_recv"] if latest is not None else None,
            "ts_exchange": ts_exchange,
            "ts_recv": ts_recv,
            "ts_publish": self._clock(),
        }
        try:
            encoded = codec.encode(payload)
        except (TypeError, ValueError) as exc:
            self._encode_failed(instrument.venue, exc)
            return False
        self._sink(state.status_topic, encoded)
        return True

    def _publish_trade_record(
        self,
        state: InstrumentState,
        kind: str,
        side: str | None,
        price: float,
        size: float,
        trade_id: str | None,
        forced: bool,
        liq_side: str | None,
        ts_exchange: int,
        ts_recv: int,
    ) -> None:
        """One trade or liquidation on the instrument's trades topic (schema/trade.v1.json). No `seq` and no
        book fields: it is the venue's event as normalized, not a metrics payload."""
        instrument = state.instrument
        payload = {
            "schema": SCHEMA,
            "kind": kind,
            "venue": instrument.venue,
            "symbol": instrument.symbol,
            "instrument": instrument.venue_id,
            "trade_id": trade_id,
            "side": side,
            "price": price,
            "size": size,
            "notional": price * size,
            "forced": forced,
            "liq_side": liq_side,
            "ts_exchange": ts_exchange,
            "ts_recv": ts_recv,
            "ts_publish": self._clock(),
        }
        try:
            encoded = codec.encode(payload)
        except (TypeError, ValueError) as exc:
            self._encode_failed(instrument.venue, exc)
            return
        self._sink(state.trades_topic, encoded)

    def _sane(self, venue: str, what: str, price: float, size: float) -> bool:
        """A trade or liquidation with a price and size a subscriber and the windows can use (positive, below
        MAX_LEVEL_VALUE): the parsers of some venues pass the venue's numbers through unchecked. Anything else is
        counted as a bad frame and reaches neither the metrics nor the bus."""
        if 0.0 < price < MAX_LEVEL_VALUE and 0.0 < size < MAX_LEVEL_VALUE:
            return True
        self.bad_frames += 1
        if self._hooks is not None:
            self._hooks.bad_frame(venue)
        if self._bad_frame_log.allow(f"{what}:{venue}") is not None:
            event(log, logging.WARNING, "bad_trade_values", venue=venue, kind=what, price=price, size=size)
        return False

    def _in_range(self, venue: str, what: str, *values: float | None) -> bool:
        """Open interest, funding and ratio values a payload can carry: finite and below MAX_LEVEL_VALUE in size
        (a venue's mark price of 1e308 is finite, but its notional is not). Anything else is a bad frame."""
        if all(v is None or -MAX_LEVEL_VALUE < v < MAX_LEVEL_VALUE for v in values):
            return True
        self.bad_frames += 1
        if self._hooks is not None:
            self._hooks.bad_frame(venue)
        if self._bad_frame_log.allow(f"{what}:{venue}") is not None:
            event(log, logging.WARNING, "bad_values", venue=venue, kind=what, values=[repr(v) for v in values])
        return False

    def _encode_failed(self, venue: str, exc: Exception) -> None:
        self.bad_frames += 1
        if self._hooks is not None:
            self._hooks.bad_frame(venue)
        if self._bad_frame_log.allow(f"encode:{venue}") is not None:
            event(log, logging.WARNING, "payload_not_encodable", venue=venue, error=repr(exc)[:200])
