"""Operational Prometheus instruments (counters, gauges, histograms) built against an injected registry.

Sits in `flowgauge.telemetry`, above the pipeline: the composition root builds one `Telemetry` per process on
its own `CollectorRegistry` and hands it (or the cached per-venue / per-book children it returns) to the
sessions, the book engine, the publishers and the recorder. Signal gauges are not here: they are read at
scrape time by `telemetry.collector`. Must not use the global `prometheus_client.REGISTRY`, and must not put
a label value on a metric that did not come from configuration or from the small fixed vocabularies below.

Hot-path callers keep the children returned by `venue()` / `book()` instead of calling `.labels()` per event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from flowgauge.connectors.failures import CAUSE_CLASSES, FIXED_CAUSES
from flowgauge.types import InvalidReason

__all__ = [
    "BACKENDS",
    "BACKEND_DROP_REASONS",
    "DISCONNECT_REASONS",
    "DROP_REASONS",
    "LATENCY_BUCKETS",
    "LATENCY_STAGES",
    "RECONNECT_REASONS",
    "RESYNC_REASONS",
    "BookInstruments",
    "Telemetry",
    "VenueInstruments",
]

# Seconds, 10 us to 1 s in 1-2.5-5 steps: recv_to_publish is mostly under 250 us (the target), which a first
# bucket of 0.5 ms could not show; above 1 s a feed is stalled and +Inf says enough. STYLE.md 3.10.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)
LATENCY_STAGES: tuple[str, ...] = ("exchange_to_recv", "recv_to_publish")
RECONNECT_REASONS: tuple[str, ...] = ("closed", "timeout", "error", "server_restart", "scheduled")
# The book state machine's reasons (types.InvalidReason, lower-cased; CHECKSUM and OVERFLOW among them).
RESYNC_REASONS: tuple[str, ...] = tuple(r.value.lower() for r in InvalidReason)
BACKENDS: tuple[str, ...] = ("embedded", "nats", "redis", "null")
# Why a publisher dropped a message (publish.base.PublishTelemetry), and which reasons each backend can report:
# those series exist from the start, at 0, for every configured backend.
DROP_REASONS: tuple[str, ...] = ("queue_full", "buffer_full", "send_failed", "closed", "subscriber_full")
BACKEND_DROP_REASONS: Mapping[str, tuple[str, ...]] = {
    "embedded": ("subscriber_full",),
    "nats": ("queue_full", "buffer_full", "send_failed", "closed"),
    "redis": ("queue_full", "send_failed"),
    "null": (),
}
DISCONNECT_REASONS: tuple[str, ...] = (
    "slow", "slow_bytes", "slow_lag", "keepalive", "deadline", "max_clients", "client", "shutdown",
)
CONTROL_REJECT_REASONS: tuple[str, ...] = ("rate_limited", "limit", "invalid", "binary")
HTTP_REJECT_REASONS: tuple[str, ...] = ("auth", "deadline")


@dataclass(frozen=True, slots=True)
class VenueInstruments:
    """Cached label children for one venue; what a session and a parser touch per frame."""

    messages: Counter
    received_bytes: Counter
    bad_frames: Counter
    payloads_conflated: Counter
    connected: Gauge
    exchange_to_recv: Histogram
    recv_to_publish: Histogram
    reconnects: Mapping[str, Counter]

    def frame_received(self, nbytes: int) -> None:
        """One websocket frame of `nbytes` bytes arrived."""
        self.messages.inc()
        self.received_bytes.inc(nbytes)

    def observe_exchange_to_recv(self, seconds: float) -> None:
        """Exchange timestamp to local receive. Includes clock skew, so negative values are clamped to 0."""
        self.exchange_to_recv.observe(seconds if seconds > 0.0 else 0.0)

    def observe_recv_to_publish(self, seconds: float) -> None:
        """Local receive to hand-off to the publishers."""
        self.recv_to_publish.observe(seconds if seconds > 0.0 else 0.0)

    def reconnect(self, reason: str) -> None:
        """Count one reconnect.

        Raises:
            ValueError: if `reason` is not in `RECONNECT_REASONS` (a programming error).
        """
        try:
            child = self.reconnects[reason]
        except KeyError:
            raise ValueError(
                f"unknown reconnect reason {reason!r}; expected one of {RECONNECT_REASONS}"
            ) from None
        child.inc()


@dataclass(frozen=True, slots=True)
class BookInstruments:
    """Cached label children for one (venue, symbol) book."""

    sequence_gaps: Counter
    resyncs: Mapping[str, Counter]

    def resync(self, reason: str) -> None:
        """Count one resync.

        Raises:
            ValueError: if `reason` is not in `RESYNC_REASONS` (a programming error).
        """
        try:
            child = self.resyncs[reason]
        except KeyError:
            raise ValueError(f"unknown resync reason {reason!r}; expected one of {RESYNC_REASONS}") from None
        child.inc()


def _package_version() -> str:
    try:
        return _dist_version("flowgauge")
    except PackageNotFoundError:
        return "unknown"


class Telemetry:
    """Every operational metric of the daemon, registered on `registry`.

    Args:
        registry: the registry `/metrics` serves; never the global one.
        version: value of the `version` label of `flowgauge_build_info`; defaults to the installed version.
        backends: the configured publisher backends: their counters exist from the start (at 0); a backend
            not named here gets series only if it ever counts something (the daemon names exactly the
            backends its configuration enables, so /metrics never shows a backend that is not running). The
            `flowgauge_fanout_*` metrics are registered only when `embedded` is among them.

    Besides the metric objects (attributes named after the metric), it implements the publisher-facing
    protocols `flowgauge.publish.base.PublishTelemetry` and `flowgauge.publish.embedded.FanoutTelemetry`.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        version: str | None = None,
        backends: Iterable[str] = BACKENDS,
    ) -> None:
        self.registry = registry
        r = registry
        # No `<counter>_created` / `<histogram>_created` samples: a quarter of all series otherwise, and nothing
        # here needs them (rate() and increase() handle counter resets). A process-wide switch of
        # prometheus_client; the daemon makes no other registry.
        disable_created_metrics()
        backends = tuple(backends)
        # The embedded fan-out's own metrics exist only when that backend is configured.
        fr = r if "embedded" in backends else None

        # Ingest.
        self.ws_messages = Counter(
            "flowgauge_ws_messages_total", "Websocket frames received from the venue (frames).",
            ["venue"], registry=r,
        )
        self.ws_received_bytes = Counter(
            "flowgauge_ws_received_bytes_total", "Websocket payload bytes received from the venue (bytes).",
            ["venue"], registry=r,
        )
        self.bad_frames = Counter(
            "flowgauge_bad_frames_total", "Venue frames that could not be parsed or were rejected (frames).",
            ["venue"], registry=r,
        )
        self.payloads_conflated = Counter(
            "flowgauge_payloads_conflated_total",
            "Book payloads shed by backlog conflation: replaced by a later state of the same book published in "
            "the same loop turn (payloads).",
            ["venue"], registry=r,
        )
        self.ws_connected = Gauge(
            "flowgauge_ws_connected", "1 while the venue websocket is connected, else 0 (boolean).",
            ["venue"], registry=r,
        )
        self.venue_errors = Counter(
            "flowgauge_venue_errors_total",
            "Failed venue requests and connections (markets loading, REST, websocket) by cause class: dns, "
            "connect, tls, http_<code> (http_4xx / http_5xx for rarer codes), timeout, closed, protocol, "
            "other (failures).",
            ["venue", "kind"], registry=r,
        )
        self.ws_reconnects = Counter(
            "flowgauge_ws_reconnects_total",
            "Venue websocket reconnects by reason: closed, timeout, error, server_restart, scheduled "
            "(reconnects).",
            ["venue", "reason"], registry=r,
        )

        # Book integrity.
        self.book_resyncs = Counter(
            "flowgauge_book_resyncs_total",
            "Book resynchronisations from a fresh snapshot, by reason (resyncs).",
            ["venue", "symbol", "reason"], registry=r,
        )
        self.book_sequence_gaps = Counter(
            "flowgauge_book_sequence_gaps_total", "Venue sequence breaks detected on a book (gaps).",
            ["venue", "symbol"], registry=r,
        )

        # Latency: no symbol label, buckets multiply series.
        self.event_latency = Histogram(
            "flowgauge_event_latency_seconds",
            "Event latency by stage: exchange_to_recv (includes clock skew, clamped at 0) and "
            "recv_to_publish (seconds).",
            ["venue", "stage"], buckets=LATENCY_BUCKETS, registry=r,
        )

        # Publishers and fan-out.
        self.published_messages = Counter(
            "flowgauge_published_messages_total", "Messages accepted by a publisher backend (messages).",
            ["backend"], registry=r,
        )
        self.publish_dropped = Counter(
            "flowgauge_publish_dropped_total",
            "Messages a publisher backend dropped, by reason: queue_full (outbox full, oldest dropped), "
            "buffer_full (client library buffer full while reconnecting), send_failed, closed, "
            "subscriber_full (embedded: a subscriber's buffer full, oldest dropped; includes the websocket "
            "client drops) (messages).",
            ["backend", "reason"], registry=r,
        )
        self.fanout_clients = Gauge(
            "flowgauge_fanout_clients", "Websocket clients connected to the embedded fan-out (clients).",
            registry=fr,
        )
        self.fanout_dropped_messages = Counter(
            "flowgauge_fanout_dropped_messages_total",
            "Messages dropped (oldest first) from full websocket client buffers (messages).",
            registry=fr,
        )
        self.fanout_disconnects = Counter(
            "flowgauge_fanout_disconnects_total",
            "Websocket connections ended by reason: client (the peer left), shutdown, slow (buffer overflowed too "
            "often in a row), slow_bytes (buffer over bus.embedded.client_queue_bytes), slow_lag (oldest buffered "
            "message older than bus.embedded.client_max_lag_s), keepalive (no pong in time), deadline (handshake "
            "or a frame not completed in time), max_clients (upgrade refused with 503: bus.embedded.max_clients "
            "connections already) (disconnects).",
            ["reason"], registry=fr,
        )
        self.fanout_control_rejected = Counter(
            "flowgauge_fanout_control_rejected_total",
            "Websocket control messages refused by reason: rate_limited, limit (pattern count or length, id "
            "length), invalid, binary (messages).",
            ["reason"], registry=fr,
        )
        self.http_rejected = Counter(
            "flowgauge_http_rejected_total",
            "HTTP requests or connections refused by reason: auth (401: missing, wrong or repeated token), "
            "deadline (request headers not complete in time) (requests).",
            ["reason"], registry=r,
        )
        self.fanout_auth_rejected = Counter(
            "flowgauge_fanout_auth_rejected_total",
            "Websocket upgrade requests refused with 401 for a missing or wrong token (requests).",
            registry=fr,
        )

        # Recorder.
        self.rest_requests = Counter(
            "flowgauge_rest_requests_total",
            "REST requests to venues (snapshots and polls) by outcome: ok, rate_limited (429/418), error.",
            ["venue", "kind", "outcome"],
            registry=r,
        )
        self.recorder_dropped_frames = Counter(
            "flowgauge_recorder_dropped_frames_total",
            "Raw frames the recorder dropped because its buffer was full (frames).",
            registry=r,
        )

        self.build_info = Gauge(
            "flowgauge_build_info", "Always 1; the version label carries the running version (info).",
            ["version"], registry=r,
        )
        self.build_info.labels(version or _package_version()).set(1)
        # Which shard this process runs (set once by the daemon): dashboards and alerts group by it with
        # `* on (instance) group_left (shard) flowgauge_shard_info`.
        self.shard_info = Gauge(
            "flowgauge_shard_info",
            "Always 1; the shard label is this process's shard.index, shard_count its shard.count (info).",
            ["shard", "shard_count"], registry=r,
        )

        # Eager children (a series that exists at 0 beats a missing one) cached for the hot path.
        self._venues: dict[str, VenueInstruments] = {}
        self._books: dict[tuple[str, str], BookInstruments] = {}
        self._published: dict[str, Counter] = {}
        self._dropped: dict[tuple[str, str], Counter] = {}
        for backend in backends:
            self._backend_children(backend)
        self._disconnects = {reason: self.fanout_disconnects.labels(reason) for reason in DISCONNECT_REASONS}
        self._control_rejected = {r_: self.fanout_control_rejected.labels(r_) for r_ in CONTROL_REJECT_REASONS}
        self._http_rejected = {r_: self.http_rejected.labels(r_) for r_ in HTTP_REJECT_REASONS}

    # ------------------------------------------------------------------------------- label-set registration

    def register_venue(self, venue: str) -> VenueInstruments:
        """Create (or return) every child labelled with `venue`; call at startup for each configured venue."""
        cached = self._venues.get(venue)
        if cached is not None:
            return cached
        connected = self.ws_connected.labels(venue)
        connected.set(0)
        for kind in FIXED_CAUSES:  # the http_<code> series appear on first use
            self.venue_errors.labels(venue, kind)
        instruments = VenueInstruments(
            messages=self.ws_messages.labels(venue),
            received_bytes=self.ws_received_bytes.labels(venue),
            bad_frames=self.bad_frames.labels(venue),
            payloads_conflated=self.payloads_conflated.labels(venue),
            connected=connected,
            exchange_to_recv=self.event_latency.labels(venue, "exchange_to_recv"),
            recv_to_publish=self.event_latency.labels(venue, "recv_to_publish"),
            reconnects={reason: self.ws_reconnects.labels(venue, reason) for reason in RECONNECT_REASONS},
        )
        self._venues[venue] = instruments
        return instruments

    def register_book(self, venue: str, symbol: str) -> BookInstruments:
        """Create (or return) every child labelled with (`venue`, `symbol`); call for each configured book."""
        key = (venue, symbol)
        cached = self._books.get(key)
        if cached is not None:
            return cached
        instruments = BookInstruments(
            sequence_gaps=self.book_sequence_gaps.labels(venue, symbol),
            resyncs={reason: self.book_resyncs.labels(venue, symbol, reason) for reason in RESYNC_REASONS},
        )
        self._books[key] = instruments
        return instruments

    def remove_book(self, venue: str, symbol: str) -> None:
        """Drop every series labelled with (`venue`, `symbol`): the book is retired (expired or delisted), so its
        counters stop being exported instead of lingering unchanged forever."""
        self._books.pop((venue, symbol), None)
        with contextlib.suppress(KeyError):
            self.book_sequence_gaps.remove(venue, symbol)
        for reason in RESYNC_REASONS:
            with contextlib.suppress(KeyError):
                self.book_resyncs.remove(venue, symbol, reason)

    # Same thing under the names hot-path code reads best with.
    venue = register_venue
    book = register_book

    # ------------------------------------------------------------------------ publisher-facing protocols

    def _backend_children(self, backend: str) -> Counter:
        published = self._published.get(backend)
        if published is None:
            published = self._published[backend] = self.published_messages.labels(backend)
            for reason in BACKEND_DROP_REASONS.get(backend, ()):
                self._dropped_child(backend, reason)
        return published

    def _dropped_child(self, backend: str, reason: str) -> Counter:
        child = self._dropped.get((backend, reason))
        if child is None:
            child = self._dropped[(backend, reason)] = self.publish_dropped.labels(backend, reason)
        return child

    def count_published(self, backend: str, n: int = 1) -> None:
        """`n` messages accepted by `backend`."""
        child = self._published.get(backend)
        if child is None:
            child = self._backend_children(backend)
        child.inc(n)

    def count_publish_dropped(self, backend: str, n: int = 1, *, reason: str = "queue_full") -> None:
        """`n` messages dropped by `backend`, for `reason` (one of `DROP_REASONS`).

        Raises:
            ValueError: if `reason` is not in `DROP_REASONS` (a programming error).
        """
        child = self._dropped.get((backend, reason))
        if child is None:
            if reason not in DROP_REASONS:
                raise ValueError(f"unknown drop reason {reason!r}; expected one of {DROP_REASONS}")
            self._backend_children(backend)
            child = self._dropped_child(backend, reason)
        child.inc(n)

    def set_shard(self, index: int, count: int) -> None:
        """Export `flowgauge_shard_info{shard=index, shard_count=count} 1` (one series; a second call replaces it)."""
        self.shard_info.clear()
        self.shard_info.labels(str(index), str(count)).set(1)

    def set_fanout_clients(self, n: int) -> None:
        self.fanout_clients.set(n)

    def count_fanout_dropped(self, n: int = 1) -> None:
        self.fanout_dropped_messages.inc(n)

    def count_fanout_disconnect(self, reason: str) -> None:
        """Count a websocket client disconnect.

        Raises:
            ValueError: if `reason` is not in `DISCONNECT_REASONS` (a programming error).
        """
        try:
            child = self._disconnects[reason]
        except KeyError:
            raise ValueError(
                f"unknown disconnect reason {reason!r}; expected one of {DISCONNECT_REASONS}"
            ) from None
        child.inc()

    def count_fanout_auth_rejected(self) -> None:
        self.fanout_auth_rejected.inc()

    def count_fanout_control_rejected(self, reason: str) -> None:
        """A websocket control message refused; `reason` is one of `CONTROL_REJECT_REASONS`."""
        self._control_rejected[reason].inc()

    def count_http_rejected(self, reason: str) -> None:
        """An HTTP request (or connection) refused; `reason` is one of `HTTP_REJECT_REASONS`."""
        self._http_rejected[reason].inc()

    def count_rest_request(self, venue: str, kind: str, outcome: str) -> None:
        """One REST request; `kind` is snapshot, open_interest or long_short."""
        self.rest_requests.labels(venue, kind, outcome).inc()

    def count_venue_error(self, venue: str, kind: str) -> None:
        """One failed venue request or connection; `kind` outside `CAUSE_CLASSES` counts as `other`."""
        self.venue_errors.labels(venue, kind if kind in CAUSE_CLASSES else "other").inc()

    def count_recorder_dropped(self, n: int = 1) -> None:
        self.recorder_dropped_frames.inc(n)
