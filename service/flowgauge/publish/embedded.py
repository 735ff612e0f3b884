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

A request may carry an `id` (string or integer), echoed in the reply. A client whose buffer overflowed
`slow_client_overflows` times in a row is disconnected with close code 1013 (try again later). With a token
configured, the upgrade request must carry `Authorization: Bearer <token>` or `?token=<token>`, else 401.

Must not import `flowgauge.telemetry` (a higher layer): counters are reported through `FanoutTelemetry`, which
`flowgauge.telemetry.instruments.Telemetry` satisfies. Not thread-safe: call everything from the loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
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
_MAX_ERROR_ECHO = 80

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
        """A client left: `slow`, `client` or `shutdown` (`flowgauge_fanout_disconnects_total`)."""
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
        "_on_drop",
        "_on_slow",
        "_patterns",
        "_queue",
        "_slow_after",
        "_streak",
        "_waiter",
        "dropped",
        "maxsize",
    )

    def __init__(
        self,
        bus: EmbeddedBus,
        patterns: Iterable[TopicPattern],
        maxsize: int,
        *,
        framed: bool,
        on_drop: Callable[[], None],
        on_slow: Callable[[], None] | None = None,
        slow_after: int | None = None,
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
        return self._queue.popleft()

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
        return queue.popleft()

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
            queue.popleft()
            self.dropped += 1
            self._streak += 1
            self._on_drop()
            if self._streak == self._slow_after and self._on_slow is not None:
                self._on_slow()
                if self._closed:
                    return
        queue.append(item)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


class _Client:
    """One websocket client: its connection, its subscription, and the relay task that feeds it."""

    __slots__ = ("name", "reason", "relay", "sub", "ws")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.name = f"{ws.remote_address[0]}:{ws.remote_address[1]}" if ws.remote_address else str(ws.id)
        self.sub: Subscription[bytes] | None = None
        self.relay: asyncio.Task[None] | None = None
        self.reason: str | None = None  # why it was disconnected, decided once


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
    ) -> None:
        if client_queue < 1:
            raise ValueError(f"client_queue must be >= 1, got {client_queue}")
        if slow_client_overflows < 1:
            raise ValueError(f"slow_client_overflows must be >= 1, got {slow_client_overflows}")
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
            )
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
        if self._token is None:
            return None
        supplied: str | None = None
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, credentials = header.partition(" ")
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
        if self._telemetry is not None:
            self._telemetry.count_fanout_auth_rejected()
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "unauthorized\n")
        response.headers["WWW-Authenticate"] = 'Bearer realm="flowgauge"'
        return response

    async def _serve_client(self, ws: ServerConnection) -> None:
        """Connection handler: owns the client's subscription and relay, answers control messages."""
        client = _Client(ws)
        sub: Subscription[bytes] = Subscription(
            self,
            (),
            self._client_queue,
            framed=True,
            on_drop=self._on_client_drop,
            on_slow=lambda: self._kick_slow(client),
            slow_after=self._slow_after,
        )
        client.sub = sub
        if self._closing:
            await ws.close(CloseCode.GOING_AWAY, "server shutdown")
            return
        self._attach(sub)
        self._clients.add(client)
        self._report_clients()
        client.relay = self._spawn(self._relay(client), f"fanout-relay:{client.name}")
        log.info("fanout_client_connected: client=%s", client.name)
        try:
            async for message in ws:
                await self._on_control(client, message)
        except ConnectionClosed:
            pass  # abnormal closure by the peer or an abort by us: either way this client is gone
        finally:
            sub.close()
            self._clients.discard(client)
            self._mark_disconnect(client, "client")
            self._report_clients()
            client.relay.cancel()
            # asyncio.wait neither raises the relay's CancelledError here nor swallows our own cancellation.
            await asyncio.wait([client.relay])
            log.info("fanout_client_disconnected: client=%s reason=%s dropped=%d",
                     client.name, client.reason, sub.dropped)

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
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            request = None
            reply = {"op": "error", "error": "invalid JSON"}
        else:
            reply = self._apply_control(client.sub, request)
        if isinstance(request, dict):
            request_id = request.get("id")
            if isinstance(request_id, str | int) and not isinstance(request_id, bool):
                reply["id"] = request_id
        await client.ws.send(orjson.dumps(reply), text=True)

    def _apply_control(self, sub: Subscription[bytes], request: object) -> dict[str, object]:
        if not isinstance(request, dict):
            return {"op": "error", "error": "expected a JSON object"}
        op = request.get("op")
        if op not in ("subscribe", "unsubscribe"):
            return {"op": "error", "error": f"unknown op {str(op)[:_MAX_ERROR_ECHO]!r}"}
        patterns = request.get("patterns")
        if (
            not isinstance(patterns, list)
            or not patterns
            or not all(isinstance(p, str) for p in patterns)
        ):
            return {"op": "error", "error": "'patterns' must be a non-empty list of strings"}
        if op == "unsubscribe":
            sub.remove_patterns(patterns)
            return {"op": "subscribed", "patterns": list(sub.patterns)}
        if any(len(p) > _MAX_PATTERN_CHARS for p in patterns):
            return {"op": "error", "error": f"a pattern is longer than {_MAX_PATTERN_CHARS} characters"}
        try:
            compiled = [TopicPattern(p) for p in patterns]
        except ValueError as exc:
            return {"op": "error", "error": str(exc)[: 2 * _MAX_PATTERN_CHARS]}
        if len(set(sub.patterns) | {p.pattern for p in compiled}) > _MAX_PATTERNS_PER_CLIENT:
            return {"op": "error", "error": f"at most {_MAX_PATTERNS_PER_CLIENT} patterns per client"}
        new = [p for p in compiled if p.pattern not in sub.patterns]
        # Topics the earlier patterns already match are being streamed live: no snapshot for those.
        snapshot = [
            (topic, payload)
            for topic, payload in self._latest.items()
            if any(p.matches(topic) for p in new) and not sub._matches(topic)
        ]
        sub.add_patterns(compiled)
        # Queued before returning to the loop, so every live frame published from now on comes after them.
        for topic, payload in snapshot:
            sub._push(snapshot_frame(topic, payload))
        return {"op": "subscribed", "patterns": list(sub.patterns)}

    def _kick_slow(self, client: _Client) -> None:
        """Called from `publish` when a client's buffer overflowed too many times in a row."""
        if client.reason is not None or self._closing:
            return
        self._mark_disconnect(client, "slow")
        assert client.sub is not None
        log.warning("fanout_slow_client: client=%s dropped=%d, disconnecting",
                    client.name, client.sub.dropped)
        # Stop buffering for it now; what is already buffered is still offered until the close completes.
        client.sub.close()
        self._spawn(
            self._close_client(client, CloseCode.TRY_AGAIN_LATER, "slow consumer"),
            f"fanout-kick:{client.name}",
        )

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
