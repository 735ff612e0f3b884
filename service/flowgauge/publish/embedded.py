"""The embedded bus: in-process pub/sub plus a websocket fan-out server; the default publisher.

Sits at the end of the engine -> publishers edge. `publish(topic, payload)` is called synchronously by the
engine on every event and fans the message out, in the same call, to every matching subscription: in-process
`Subscription`s (async iterators for code in this process) and one internal subscription per websocket client.
Each subscription owns a bounded buffer with a drop-oldest policy, so a subscriber that stops reading loses
its oldest messages (counted) instead of slowing the engine or the other subscribers. For market state the
newest value is the one worth delivering, which is why the oldest message is the one dropped.

Websocket protocol (one JSON object per text message):

    client -> server   {"op": "subscribe", "patterns": ["flowgauge.v1.bybit.>"]}      (or "unsubscribe")
    server -> client   {"op": "subscribed", "patterns": [<every pattern now active>]}
                       {"op": "error", "error": "<why the request was refused>"}
    server -> client   {"topic": "...", "payload": {...}, "snapshot": true}   current values, then
                       {"topic": "...", "payload": {...}}     one frame per matching message (codec.frame)

Current values: the bus keeps the latest payload of every topic published (book, metric and status topics),
except trades topics (`flowgauge.v1.trades.…`): a trade is an event, and the last one replayed as a current
value would mislead.
A websocket subscribe request first queues, for every topic its new patterns match and its earlier patterns
did not, that topic's latest payload marked `"snapshot": true` (codec.snapshot_frame), then live frames
follow. The snapshot is queued in the same synchronous step that adds the patterns, on the loop thread, so no
live message can fall between the two or overtake it. In-process subscriptions get no snapshot.

A request may carry an `id` (string of at most 128 characters, or integer), echoed in the reply.

Limits, each counted when hit (`count_fanout_control_rejected` / `count_fanout_disconnect`):
- control messages: text frames of at most 64 KiB (a larger one closes the connection, 1009); binary frames,
  more than `control_burst` requests at once or `control_rate` per second sustained (a token bucket per client),
  more than 64 patterns per client, patterns longer than 256 characters or 8 tokens or holding anything but
  printable ASCII, and oversized ids are refused with an error reply. Every limit is checked before a pattern is
  compiled or matched, so a refused request costs the loop almost nothing.
- slow readers: a client whose buffer overflowed `slow_client_overflows` times in a row (`slow`), whose buffer
  holds more than `client_queue_bytes` bytes (`slow_bytes`) or whose oldest buffered message is older than
  `client_max_lag_s` (`slow_lag`) is disconnected with close code 1013 (try again later) and its buffer freed.
- slow senders: a connection that has not completed its opening handshake `handshake_timeout` seconds after it
  was accepted, or that has held an incomplete frame for `frame_timeout` seconds, is aborted (`deadline`).
- keepalive: a client that does not answer pings within `ping_timeout` is closed by websockets (`keepalive`).
- connections: beyond `max_clients` accepted connections (open or handshaking), an upgrade is refused with 503
  (`max_clients`).
With a token configured, the upgrade request must carry exactly one `Authorization: Bearer <token>` header, or no
such header and `?token=<token>`, else 401 (counted, logged at most once per 10 s with the count held back).
Connection and disconnection lines are logged at most once per 10 s too, each with how many were held back.

Must not import `flowgauge.telemetry` (a higher layer): counters are reported through `FanoutTelemetry`, which
`flowgauge.telemetry.instruments.Telemetry` satisfies. Not thread-safe: call everything from the loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hmac
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from http import HTTPStatus
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from flowgauge.logs import BurstLimiter
from flowgauge.publish.base import PublishTelemetry
from flowgauge.publish.codec import frame, snapshot_frame
from flowgauge.publish.topics import TRADES_ROOT, TopicPattern

__all__ = ["EmbeddedBus", "FanoutTelemetry", "Message", "Subscription"]

log = logging.getLogger(__name__)

Message = tuple[str, bytes]
"""What an in-process subscription yields: (topic, encoded payload)."""

_T = TypeVar("_T")

BACKEND = "embedded"

# Limits on what a websocket client may ask for: control messages are tiny, and every pattern costs a
# match per new topic, so both are bounded.
_MAX_CONTROL_BYTES = 64 * 1024
_MAX_PATTERNS_PER_CLIENT = 64
_MAX_PATTERN_CHARS = 256
# Topics have at most 5 tokens; compiling a pattern costs time linear in its tokens (~0.4 ms at 127), so a bound
# keeps one refused-or-accepted request cheap without refusing any pattern that could match a topic.
_MAX_PATTERN_TOKENS = 8
_MAX_ERROR_ECHO = 80
_MAX_REQUEST_ID_CHARS = 128
_KEEPALIVE_REASON = "keepalive ping timeout"  # what websockets sends (1011) when a pong does not come in time
_LOG_INTERVAL_S = 10.0  # per-connection log lines: at most one per kind per interval, with the held-back count

# The topic -> subscriptions cache is keyed by published topics, which come from configured instruments; the
# bound only protects against a caller publishing unbounded distinct topics.
_MAX_ROUTES = 65_536
# The latest-value cache holds one payload per topic, so it is as bounded as the topics are; the same guard
# applies, evicting the topic first published longest ago (counted in `latest_evicted`).
_MAX_LATEST = 65_536


class FanoutTelemetry(PublishTelemetry, Protocol):
    """Counters the embedded bus reports; implemented by `flowgauge.telemetry.instruments.Telemetry`."""

    def set_fanout_clients(self, n: int) -> None:
        """Number of connected websocket clients (`flowgauge_fanout_clients`)."""
        ...

    def count_fanout_dropped(self, n: int = 1) -> None:
        """Messages dropped from a websocket client's buffer (`flowgauge_fanout_dropped_messages_total`)."""
        ...

    def count_fanout_disconnect(self, reason: str) -> None:
        """A connection ended: `client`, `shutdown`, `slow`, `slow_bytes`, `slow_lag`, `keepalive` or
        `deadline` (`flowgauge_fanout_disconnects_total`)."""
        ...

    def count_fanout_control_rejected(self, reason: str) -> None:
        """A control message refused: `rate_limited`, `limit`, `invalid` or `binary`
        (`flowgauge_fanout_control_rejected_total`)."""
        ...

    def count_fanout_auth_rejected(self) -> None:
        """An upgrade request without the right token was refused (`flowgauge_fanout_auth_rejected_total`)."""
        ...


class Subscription(Generic[_T]):
    """A bounded, drop-oldest buffer of messages matching a set of patterns; an async iterator.

    Created by `EmbeddedBus.subscribe`. Iterating yields `(topic, payload_bytes)` in publish order. When the
    buffer holds `maxsize` messages, a new message evicts the oldest one and `dropped` grows by one (the bus
    counts it too). `close()` detaches the subscription: nothing new arrives, the messages already buffered
    are still yielded, then iteration ends.
    """

    __slots__ = (
        "_bus",
        "_closed",
        "_framed",
        "_max_age",
        "_max_bytes",
        "_on_drop",
        "_on_slow",
        "_patterns",
        "_queue",
        "_slow_after",
        "_streak",
        "_times",
        "_waiter",
        "dropped",
        "maxsize",
        "queued_bytes",
    )

    def __init__(
        self,
        bus: EmbeddedBus,
        patterns: Iterable[TopicPattern],
        maxsize: int,
        *,
        framed: bool,
        on_drop: Callable[[], None],
        on_slow: Callable[[str], None] | None = None,
        slow_after: int | None = None,
        max_bytes: int | None = None,
        max_age: float | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self._bus = bus
        self._patterns: dict[str, TopicPattern] = {p.pattern: p for p in patterns}
        self.maxsize = maxsize
        self._queue: collections.deque[_T] = collections.deque(maxlen=maxsize)
        self._framed = framed  # websocket clients take the ready-made frame instead of (topic, payload)
        self._on_drop = on_drop
        self._on_slow = on_slow
        self._slow_after = slow_after
        self._streak = 0  # overflows since the consumer last took a message
        # Byte and age bounds apply to websocket clients (framed: items are bytes). `_times` holds each buffered
        # item's enqueue time (monotonic), parallel to `_queue`, so the oldest one's age is `now - _times[0]`.
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._times: collections.deque[float] | None = (
            collections.deque() if framed and (max_bytes is not None or max_age is not None) else None
        )
        self.queued_bytes = 0
        """Bytes buffered (websocket clients only; 0 for in-process subscriptions)."""
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0
        """Messages evicted from this subscription's buffer because it was full."""

    @property
    def patterns(self) -> tuple[str, ...]:
        """The active patterns, in the order they were added."""
        return tuple(self._patterns)

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Messages buffered and not yet taken."""
        return len(self._queue)

    def add_patterns(self, patterns: Iterable[str | TopicPattern]) -> None:
        """Also receive messages matching `patterns` (already-active ones are ignored).

        Raises:
            ValueError: on an invalid pattern; then no pattern is added.
        """
        compiled = [p if isinstance(p, TopicPattern) else TopicPattern(p) for p in patterns]
        for p in compiled:
            self._patterns.setdefault(p.pattern, p)
        self._bus._invalidate_routes()

    def remove_patterns(self, patterns: Iterable[str | TopicPattern]) -> None:
        """Stop receiving messages for `patterns` (unknown ones are ignored)."""
        for p in patterns:
            self._patterns.pop(str(p), None)
        self._bus._invalidate_routes()

    def close(self) -> None:
        """Detach from the bus and end iteration once the buffer is empty. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._bus._detach(self)
        self._wake()

    def get_nowait(self) -> _T | None:
        """Take the oldest buffered message, or None if there is none."""
        if not self._queue:
            return None
        self._streak = 0
        return self._pop()

    def clear(self) -> None:
        """Drop everything buffered (a disconnected client's backlog: its memory is released now)."""
        self._queue.clear()
        if self._times is not None:
            self._times.clear()
        self.queued_bytes = 0

    def _pop(self) -> _T:
        item = self._queue.popleft()
        if self._framed:
            self.queued_bytes -= len(item)  # type: ignore[arg-type]  # framed items are bytes
            if self._times is not None:
                self._times.popleft()
        return item

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> _T:
        queue = self._queue
        while not queue:
            if self._closed:
                raise StopAsyncIteration
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        # The consumer is keeping up again: the slow-consumer streak counts only uninterrupted overflows.
        self._streak = 0
        return self._pop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Bus side.

    def _matches(self, topic: str) -> bool:
        return any(p.matches(topic) for p in self._patterns.values())

    def _push(self, item: _T) -> None:
        queue = self._queue
        if len(queue) >= self.maxsize:
            self._pop()
            self.dropped += 1
            self._streak += 1
            self._on_drop()
            if self._streak == self._slow_after and self._on_slow is not None:
                self._on_slow("slow")
                if self._closed:
                    return
        queue.append(item)
        if self._framed:
            self.queued_bytes += len(item)  # type: ignore[arg-type]  # framed items are bytes
            times = self._times
            if times is not None:
                now = time.monotonic()
                times.append(now)
                if self._on_slow is not None:
                    if self._max_bytes is not None and self.queued_bytes > self._max_bytes:
                        self._on_slow("slow_bytes")
                    elif self._max_age is not None and now - times[0] > self._max_age:
                        self._on_slow("slow_lag")
                    if self._closed:
                        return
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


class _Client:
    """One websocket client: its connection, its subscription, the relay task that feeds it, and the token
    bucket that rate-limits its control messages."""

    __slots__ = ("bucket_at", "name", "reason", "relay", "sub", "tokens", "ws")

    def __init__(self, ws: ServerConnection, burst: float) -> None:
        self.ws = ws
        self.name = f"{ws.remote_address[0]}:{ws.remote_address[1]}" if ws.remote_address else str(ws.id)
        self.sub: Subscription[bytes] | None = None
        self.relay: asyncio.Task[None] | None = None
        self.reason: str | None = None  # why it was disconnected, decided once
        self.tokens = burst
        self.bucket_at = time.monotonic()


class _GuardedConnection(ServerConnection):
    """A websocket server connection that records when it was accepted and since when it has held an incomplete
    frame (or an incomplete opening request), so the bus's sweeper can abort slow senders."""

    def __init__(self, *args: Any, bus: EmbeddedBus, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bus = bus
        self.made_at = self.loop.time()
        self.partial_since: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.made_at = self.loop.time()
        self.bus._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.bus._conns.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # The sans-I/O parser keeps the bytes of an incomplete request line, header block or frame in its
        # reader's buffer until the rest arrives; an empty buffer means nothing is half-received.
        if self.protocol.reader.buffer:
            if self.partial_since is None:
                self.partial_since = self.loop.time()
        else:
            self.partial_since = None


class EmbeddedBus:
    """In-process pub/sub with an optional websocket fan-out server; implements `Publisher`.

    Args:
        host: interface for the websocket server.
        port: TCP port for the websocket server; 0 picks a free port (see `bound_port`); None runs no server,
            leaving a purely in-process bus.
        token: if set, websocket clients must present it as a bearer token (header or `?token=` query).
        client_queue: bound of each websocket client's buffer, in messages.
        telemetry: where counters go (a `flowgauge.telemetry.instruments.Telemetry`); None counts only locally.
        slow_client_overflows: consecutive buffer overflows after which a websocket client is disconnected.
        close_timeout: seconds allowed for a websocket closing handshake before the TCP connection is aborted.
        client_queue_bytes: a websocket client whose buffer holds more bytes than this is disconnected.
        client_max_lag_s: a websocket client whose oldest buffered message is older than this is disconnected.
        handshake_timeout: seconds from accept to a completed opening handshake, else the socket is aborted.
        frame_timeout: seconds a connection may hold an incomplete frame, else it is aborted.
        ping_interval / ping_timeout: websocket keepalive; a client that misses a pong is closed.
        control_rate / control_burst: token bucket per client for control messages (per second / at once).
        max_clients: websocket connections (open or handshaking) beyond which upgrades are refused with 503.
    """

    backend = BACKEND

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = 0,
        token: str | None = None,
        client_queue: int = 10_000,
        telemetry: FanoutTelemetry | None = None,
        *,
        slow_client_overflows: int = 1000,
        close_timeout: float = 5.0,
        client_queue_bytes: int = 8 * 1024 * 1024,
        client_max_lag_s: float = 10.0,
        handshake_timeout: float = 5.0,
        frame_timeout: float = 5.0,
        ping_interval: float = 20.0,
        ping_timeout: float = 20.0,
        control_rate: float = 5.0,
        control_burst: int = 10,
        max_clients: int = 1024,
    ) -> None:
        if client_queue < 1:
            raise ValueError(f"client_queue must be >= 1, got {client_queue}")
        if slow_client_overflows < 1:
            raise ValueError(f"slow_client_overflows must be >= 1, got {slow_client_overflows}")
        if client_queue_bytes < 1 or client_max_lag_s <= 0:
            raise ValueError("client_queue_bytes must be >= 1 and client_max_lag_s > 0")
        if min(handshake_timeout, frame_timeout, ping_interval, ping_timeout, control_rate) <= 0 or control_burst < 1:
            raise ValueError("timeouts, ping settings and control_rate must be > 0, control_burst >= 1")
        self._queue_bytes = client_queue_bytes
        self._max_lag = client_max_lag_s
        self._handshake_timeout = handshake_timeout
        self._frame_timeout = frame_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._control_rate = control_rate
        self._control_burst = float(control_burst)
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self._max_clients = max_clients
        self._conns: set[_GuardedConnection] = set()  # every accepted websocket connection, handshaking or open
        self._by_conn: dict[ServerConnection, _Client] = {}
        self._logs = BurstLimiter(_LOG_INTERVAL_S)
        self._host = host
        self._port = port
        self._token = token or None
        self._client_queue = client_queue
        self._telemetry = telemetry
        self._slow_after = slow_client_overflows
        self._close_timeout = close_timeout
        # Ordered set of live subscriptions (dict keeps insertion order, so delivery order is stable).
        self._subs: dict[Subscription[Any], None] = {}
        self._routes: dict[str, tuple[Subscription[Any], ...]] = {}
        self._latest: dict[str, bytes] = {}  # topic -> latest payload, replayed to websocket subscribers
        self._server: Server | None = None
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()
        self.published = 0
        """Messages accepted by `publish`."""
        self.dropped = 0
        """Messages dropped by any subscription of this bus (in-process and websocket)."""
        self.latest_evicted = 0
        """Topics evicted from the latest-value cache because it held `_MAX_LATEST` topics."""

    # ----------------------------------------------------------------------------------- in-process API

    def subscribe(self, pattern: str | TopicPattern, maxsize: int = 10_000) -> Subscription[Message]:
        """Subscribe in-process to topics matching `pattern`.

        Args:
            pattern: NATS-style pattern (see `topics.TopicPattern`).
            maxsize: buffer bound in messages; beyond it the oldest message is dropped and counted.

        Returns:
            A `Subscription` yielding `(topic, payload_bytes)`; more patterns can be added to it.

        Raises:
            ValueError: on an invalid pattern or maxsize.
            RuntimeError: if the bus is closed.
        """
        if self._closing:
            raise RuntimeError("the bus is closed")
        compiled = pattern if isinstance(pattern, TopicPattern) else TopicPattern(pattern)
        sub: Subscription[Message] = Subscription(
            self, (compiled,), maxsize, framed=False, on_drop=self._on_drop
        )
        self._attach(sub)
        return sub

    def publish(self, topic: str, payload: bytes) -> None:
        """Deliver `payload` for `topic` to every matching subscription; never blocks or raises on overflow.

        A closed bus ignores the call.
        """
        if self._closing:
            return
        self.published += 1
        if self._telemetry is not None:
            self._telemetry.count_published(BACKEND)
        if not topic.startswith(TRADES_ROOT):  # trades are events, not state: never a current value
            latest = self._latest
            if len(latest) >= _MAX_LATEST and topic not in latest:
                del latest[next(iter(latest))]
                self.latest_evicted += 1
            latest[topic] = payload
        subs = self._routes.get(topic)
        if subs is None:
            subs = self._route(topic)
        framed: bytes | None = None
        for sub in subs:
            if sub._framed:
                # One frame per message, shared by every websocket client that wants it.
                if framed is None:
                    framed = frame(topic, payload)
                sub._push(framed)
            else:
                sub._push((topic, payload))

    def latest(self, topic: str) -> bytes | None:
        """The latest payload published for `topic`, or None if none was."""
        return self._latest.get(topic)

    @property
    def subscription_count(self) -> int:
        """Live subscriptions, in-process and websocket."""
        return len(self._subs)

    def client_backlog(self) -> tuple[int, int]:
        """(messages, bytes) buffered for websocket clients still held by the bus, summed over clients."""
        subs = [c.sub for c in self._clients if c.sub is not None]
        return sum(len(s) for s in subs), sum(s.queued_bytes for s in subs)

    # ----------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the websocket server (if a port is configured). Idempotent.

        Raises:
            RuntimeError: if the bus was closed.
            OSError: if the address cannot be bound.
        """
        if self._closing:
            raise RuntimeError("the bus is closed")
        if self._started:
            return
        if self._port is not None:
            self._server = await serve(
                self._serve_client,
                self._host,
                self._port,
                process_request=self._check_request,
                # Per-message deflate would cost CPU per client per message on the daemon's only loop.
                compression=None,
                max_size=_MAX_CONTROL_BYTES,
                close_timeout=self._close_timeout,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                # The sweeper enforces (and counts) handshake_timeout; websockets' own timeout is a backstop.
                open_timeout=self._handshake_timeout * 2,
                create_connection=functools.partial(_GuardedConnection, bus=self),  # type: ignore[arg-type]
            )
            self._spawn(self._sweep(), "fanout-sweep")
        self._started = True
        if self._telemetry is not None:
            self._telemetry.set_fanout_clients(0)

    @property
    def bound_port(self) -> int:
        """The TCP port the websocket server listens on (useful with port 0).

        Raises:
            RuntimeError: if the server is not running.
        """
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the websocket server is not running")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    async def close(self) -> None:
        """Stop accepting, close clients with 1001, cancel relays, end every subscription. Idempotent.

        Each client gets `close_timeout` seconds for its closing handshake; a client that does not read is
        then aborted, so close() finishes in bounded time.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            server = self._server
            if server is not None:
                # Stop listening now; websockets refuses handshakes still in progress with 503.
                server.close(close_connections=False)
            clients = list(self._clients)
            for client in clients:
                self._mark_disconnect(client, "shutdown")
            if clients:
                # return_exceptions: one client's unexpected failure must not stop the others' close.
                results = await asyncio.gather(
                    *(self._close_client(c, CloseCode.GOING_AWAY, "server shutdown") for c in clients),
                    return_exceptions=True,
                )
                for client, result in zip(clients, results, strict=True):
                    if isinstance(result, Exception):
                        log.error("fanout_client_close_failed: client=%s", client.name, exc_info=result)
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            for sub in list(self._subs):
                sub.close()
            if server is not None:
                try:
                    async with asyncio.timeout(self._close_timeout):
                        await server.wait_closed()
                except TimeoutError:
                    log.warning("fanout_close_timeout: websocket handlers still running after %.1fs",
                                self._close_timeout)
        finally:
            self._closed.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------------------------- routing internals

    def _attach(self, sub: Subscription[Any]) -> None:
        self._subs[sub] = None
        self._routes.clear()

    def _detach(self, sub: Subscription[Any]) -> None:
        if sub in self._subs:
            del self._subs[sub]
            self._routes.clear()

    def _invalidate_routes(self) -> None:
        self._routes.clear()

    def _route(self, topic: str) -> tuple[Subscription[Any], ...]:
        subs = tuple(s for s in self._subs if s._matches(topic))
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        self._routes[topic] = subs
        return subs

    def _on_drop(self) -> None:
        self.dropped += 1
        if self._telemetry is not None:
            self._telemetry.count_publish_dropped(BACKEND, reason="subscriber_full")

    def _on_client_drop(self) -> None:
        self._on_drop()
        if self._telemetry is not None:
            self._telemetry.count_fanout_dropped()

    # ------------------------------------------------------------------------------------ websocket side

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse upgrades to other paths (404) and, with a token configured, without it (401)."""
        url = urlsplit(request.path)
        if url.path != "/":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if len(self._conns) > self._max_clients:  # this connection is one of them
            if self._telemetry is not None:
                self._telemetry.count_fanout_disconnect("max_clients")
            held_back = self._logs.allow("max_clients")
            if held_back is not None:
                log.warning("fanout_max_clients: client=%s refused, %d connections (%d more not logged)",
                            _peer(connection), len(self._conns) - 1, held_back)
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many clients\n")
        if self._token is None:
            return None
        supplied: str | None = None
        # get_all, not get: get raises on a repeated header, which websockets answers with a 500 and a traceback.
        headers = request.headers.get_all("Authorization")
        if len(headers) > 1:
            return self._unauthorized(connection, "several Authorization headers")
        if headers:
            scheme, _, credentials = headers[0].partition(" ")
            if scheme.lower() == "bearer":
                supplied = credentials.strip()
        else:
            # Browsers cannot set headers on a websocket upgrade, hence the query-string fallback.
            values = parse_qs(url.query).get("token")
            if values:
                supplied = values[0]
        # compare_digest: do not leak the token's prefix through response timing.
        if supplied is not None and hmac.compare_digest(supplied.encode(), self._token.encode()):
            return None
        return self._unauthorized(connection, "missing token" if supplied is None else "wrong token")

    def _unauthorized(self, connection: ServerConnection, why: str) -> Response:
        if self._telemetry is not None:
            self._telemetry.count_fanout_auth_rejected()
        held_back = self._logs.allow("auth")
        if held_back is not None:
            log.warning("fanout_auth_rejected: client=%s why=%s (%d more rejections not logged)",
                        _peer(connection), why, held_back)
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "unauthorized\n")
        response.headers["WWW-Authenticate"] = 'Bearer realm="flowgauge"'
        return response

    async def _serve_client(self, ws: ServerConnection) -> None:
        """Connection handler: owns the client's subscription and relay, answers control messages."""
        client = _Client(ws, self._control_burst)
        sub: Subscription[bytes] = Subscription(
            self,
            (),
            self._client_queue,
            framed=True,
            on_drop=self._on_client_drop,
            on_slow=lambda reason: self._kick_slow(client, reason),
            slow_after=self._slow_after,
            max_bytes=self._queue_bytes,
            max_age=self._max_lag,
        )
        client.sub = sub
        if self._closing:
            await ws.close(CloseCode.GOING_AWAY, "server shutdown")
            return
        self._attach(sub)
        self._clients.add(client)
        self._by_conn[ws] = client
        self._report_clients()
        client.relay = self._spawn(self._relay(client), f"fanout-relay:{client.name}")
        self._log_connection("fanout_client_connected: client=%s clients=%d", client.name, len(self._clients))
        try:
            async for message in ws:
                await self._on_control(client, message)
        except ConnectionClosed:
            pass  # abnormal closure by the peer or an abort by us: either way this client is gone
        finally:
            sub.close()
            sub.clear()
            self._clients.discard(client)
            self._by_conn.pop(ws, None)
            sent = ws.protocol.close_sent
            if sent is not None and sent.code == CloseCode.INTERNAL_ERROR and sent.reason == _KEEPALIVE_REASON:
                self._mark_disconnect(client, "keepalive")
            elif sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG and self._telemetry is not None:
                # websockets closed it for a frame over max_size (64 KiB): the frame-size limit was hit.
                self._telemetry.count_fanout_control_rejected("limit")
            self._mark_disconnect(client, "client")
            self._report_clients()
            client.relay.cancel()
            # asyncio.wait neither raises the relay's CancelledError here nor swallows our own cancellation.
            await asyncio.wait([client.relay])
            self._log_connection("fanout_client_disconnected: client=%s reason=%s dropped=%d clients=%d",
                                 client.name, client.reason, sub.dropped, len(self._clients))

    def _log_connection(self, message: str, *args: object) -> None:
        """Connection lines, at most one per `_LOG_INTERVAL_S` (the counters and the gauge carry the totals)."""
        held_back = self._logs.allow("connection")
        if held_back is not None:
            log.info(message + " (%d connection events not logged)", *args, held_back)

    async def _relay(self, client: _Client) -> None:
        """Move frames from the client's buffer to its socket; `send` waits while the socket is congested."""
        assert client.sub is not None
        try:
            async for data in client.sub:
                await client.ws.send(data, text=True)
        except ConnectionClosed:
            pass  # the handler's receive loop sees the same closure and cleans up

    async def _on_control(self, client: _Client, message: str | bytes) -> None:
        """Apply one subscribe/unsubscribe request and answer it; bad requests get an error reply."""
        assert client.sub is not None
        reply: dict[str, object]
        request: object = None
        if not self._take_token(client):
            # Checked before parsing: a flood costs one bucket update and one small reply per message.
            reply, reason = {"op": "error", "error": f"rate limited: at most {self._control_rate:g} control "
                                                      f"messages per second"}, "rate_limited"
        elif isinstance(message, bytes):
            reply, reason = {"op": "error", "error": "control messages must be text frames"}, "binary"
        else:
            try:
                request = orjson.loads(message)
            except orjson.JSONDecodeError:
                reply, reason = {"op": "error", "error": "invalid JSON"}, "invalid"
            else:
                reply, reason = self._apply_control(client.sub, request)
        if isinstance(request, dict) and "id" in request:
            request_id = request["id"]
            if isinstance(request_id, str) and len(request_id) > _MAX_REQUEST_ID_CHARS:
                reply = {"op": "error", "error": f"'id' is longer than {_MAX_REQUEST_ID_CHARS} characters"}
                reason = "limit"
            elif isinstance(request_id, str | int) and not isinstance(request_id, bool):
                reply["id"] = request_id
        if reason and self._telemetry is not None:
            self._telemetry.count_fanout_control_rejected(reason)
        await client.ws.send(orjson.dumps(reply), text=True)

    def _take_token(self, client: _Client) -> bool:
        now = time.monotonic()
        client.tokens = min(self._control_burst, client.tokens + (now - client.bucket_at) * self._control_rate)
        client.bucket_at = now
        if client.tokens < 1.0:
            return False
        client.tokens -= 1.0
        return True

    def _apply_control(self, sub: Subscription[bytes], request: object) -> tuple[dict[str, object], str]:
        """The reply and, for a refused request, the counted reason (`limit` or `invalid`; "" when applied).

        Every bound (count, length, characters) is checked before any pattern is compiled or matched: compiling
        and matching are what a request can make expensive.
        """
        if not isinstance(request, dict):
            return {"op": "error", "error": "expected a JSON object"}, "invalid"
        op = request.get("op")
        if op not in ("subscribe", "unsubscribe"):
            return {"op": "error", "error": f"unknown op {str(op)[:_MAX_ERROR_ECHO]!r}"}, "invalid"
        patterns = request.get("patterns")
        if (
            not isinstance(patterns, list)
            or not patterns
            or not all(isinstance(p, str) for p in patterns)
        ):
            return {"op": "error", "error": "'patterns' must be a non-empty list of strings"}, "invalid"
        if len(patterns) > _MAX_PATTERNS_PER_CLIENT:
            return {"op": "error", "error": f"at most {_MAX_PATTERNS_PER_CLIENT} patterns per client"}, "limit"
        if any(len(p) > _MAX_PATTERN_CHARS for p in patterns):
            return {"op": "error", "error": f"a pattern is longer than {_MAX_PATTERN_CHARS} characters"}, "limit"
        if any(p.count(".") >= _MAX_PATTERN_TOKENS for p in patterns):
            return {"op": "error", "error": f"a pattern has more than {_MAX_PATTERN_TOKENS} tokens"}, "limit"
        if not all(p.isascii() and p.isprintable() for p in patterns):
            return {"op": "error", "error": "patterns must be printable ASCII"}, "invalid"
        if op == "unsubscribe":
            sub.remove_patterns(patterns)
            return {"op": "subscribed", "patterns": list(sub.patterns)}, ""
        if len(set(sub.patterns).union(patterns)) > _MAX_PATTERNS_PER_CLIENT:
            return {"op": "error", "error": f"at most {_MAX_PATTERNS_PER_CLIENT} patterns per client"}, "limit"
        try:
            compiled = [TopicPattern(p) for p in patterns]
        except ValueError as exc:
            return {"op": "error", "error": str(exc)[: 2 * _MAX_PATTERN_CHARS]}, "invalid"
        new = [p for p in compiled if p.pattern not in sub.patterns]
        # Topics the earlier patterns already match are being streamed live: no snapshot for those.
        snapshot = [
            (topic, payload)
            for topic, payload in self._latest.items()
            if any(p.matches(topic) for p in new) and not sub._matches(topic)
        ] if new else []
        sub.add_patterns(compiled)
        # Queued before returning to the loop, so every live frame published from now on comes after them.
        for topic, payload in snapshot:
            sub._push(snapshot_frame(topic, payload))
        return {"op": "subscribed", "patterns": list(sub.patterns)}, ""

    def _kick_slow(self, client: _Client, reason: str) -> None:
        """Called from `publish` when a client's buffer overflowed too many times in a row (`slow`), holds too
        many bytes (`slow_bytes`) or its oldest message is too old (`slow_lag`)."""
        if client.reason is not None or self._closing:
            return
        self._mark_disconnect(client, reason)
        assert client.sub is not None
        held_back = self._logs.allow("slow")
        if held_back is not None:
            log.warning("fanout_slow_client: client=%s reason=%s dropped=%d queued=%d bytes=%d, disconnecting "
                        "(%d more not logged)", client.name, reason, client.sub.dropped, len(client.sub),
                        client.sub.queued_bytes, held_back)
        # Stop buffering for it now and free its backlog: a client this far behind would only get stale data.
        client.sub.close()
        client.sub.clear()
        self._spawn(
            self._close_client(client, CloseCode.TRY_AGAIN_LATER, "slow consumer"),
            f"fanout-kick:{client.name}",
        )

    async def _sweep(self) -> None:
        """Abort slow senders: a handshake not done within `handshake_timeout` of the accept, or an incomplete
        frame held for `frame_timeout` (websockets itself waits for the rest of a frame indefinitely)."""
        loop = asyncio.get_running_loop()
        period = max(0.05, min(self._handshake_timeout, self._frame_timeout) / 4)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in list(self._conns):
                if conn.protocol.state is State.CONNECTING:
                    late = now - conn.made_at > self._handshake_timeout
                else:
                    late = conn.partial_since is not None and now - conn.partial_since > self._frame_timeout
                if late:
                    self._abort_slow_sender(conn)

    def _abort_slow_sender(self, conn: _GuardedConnection) -> None:
        self._conns.discard(conn)
        client = self._by_conn.get(conn)
        if client is not None:
            self._mark_disconnect(client, "deadline")
        elif self._telemetry is not None:
            self._telemetry.count_fanout_disconnect("deadline")
        stage = "handshake" if conn.protocol.state is State.CONNECTING else "frame"
        held_back = self._logs.allow("deadline")
        if held_back is not None:
            log.warning("fanout_slow_sender: client=%s stage=%s, aborted (%d more not logged)",
                        _peer(conn), stage, held_back)
        conn.transport.abort()

    async def _close_client(self, client: _Client, code: CloseCode, reason: str) -> None:
        """Closing handshake bounded by `close_timeout`; a peer that does not read is aborted."""
        try:
            async with asyncio.timeout(self._close_timeout):
                await client.ws.close(code, reason)
        except TimeoutError:
            # close() waits for the congested write buffer to drain first, which a non-reading peer never
            # allows; aborting the transport is the only bounded way out.
            client.ws.transport.abort()

    def _mark_disconnect(self, client: _Client, reason: str) -> None:
        if client.reason is None:
            client.reason = reason
            if self._telemetry is not None:
                self._telemetry.count_fanout_disconnect(reason)

    def _report_clients(self) -> None:
        if self._telemetry is not None:
            self._telemetry.set_fanout_clients(len(self._clients))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a task owned by the bus: tracked until done, cancelled and awaited by close()."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fanout_task_failed: task=%s", task.get_name(), exc_info=task.exception())


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if address else str(connection.id)
