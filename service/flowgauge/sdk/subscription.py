"""`subscribe()`: one API over the three transports, with current values, staleness and reconnection.

    async with flowgauge.subscribe("nats://127.0.0.1:4222", "flowgauge.v1.bybit.>") as sub:
        async for msg in sub:
            if isinstance(msg, flowgauge.Interrupted):
                ...  # the connection dropped; the subscription is reconnecting
                continue
            print(msg.topic, msg.payload["mid"], msg.snapshot, msg.age_s)

The transport is chosen by the URL's scheme: `ws://`/`wss://` (the embedded bus), `nats://`/`tls://`
(NATS; current values from the JetStream state stream when it exists), `redis://`/`rediss://` (Redis;
current values from the last-value keys).

Staleness: the daemon publishes a status heartbeat per book every few seconds (`publish.heartbeat_s`) on
`flowgauge.v1.status.<venue>.<slug>`. The subscription also listens to the status topics of the books its
patterns name (those extra messages are not yielded) and calls a current value stale when nothing of its
instrument (a payload or a heartbeat) arrived for `stale_after_s`: a book gone quiet because its daemon, or
the path to it, stopped, not because the market is quiet (a lost venue feed shows in the book's status). An
instrument whose final status said RETIRED (expired or delisted) is never stale: `is_retired(topic)` says so,
until anything of the instrument newer than that status arrives (a daemon restarted with it listed again).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from flowgauge.client import ConnectionLost, InvalidBusURL, Unauthorized, shown_url
from flowgauge.publish.topics import TopicPattern
from flowgauge.sdk.message import Interrupted, Message
from flowgauge.sdk.patterns import flowgauge_only, heartbeat_patterns, instrument_key, validate
from flowgauge.sdk.transport import Transport

__all__ = ["Subscription", "subscribe"]

_SCHEMES = {"ws": "ws", "wss": "ws", "nats": "nats", "tls": "nats", "redis": "redis", "rediss": "redis"}
_NOT_STATE = "flowgauge.v1.trades."  # trades are a stream of events, not a current value
_STATUS = "flowgauge.v1.status."
_NS_PER_S = 1e9


def subscribe(url: str, *patterns: str, token: str | None = None, reconnect: bool = True,
              stale_after_s: float = 15.0, open_timeout_s: float = 10.0, queue_size: int = 10000,
              backoff_initial_s: float = 0.25, backoff_max_s: float = 5.0, nats_stream: str | None = None,
              redis_last_key_prefix: str | None = None) -> Subscription:
    """Subscribe to the bus at `url` with NATS-style `patterns` (`*` one token, `>` the rest).

    Args:
        url: `ws://host:8765` (embedded bus), `nats://[user:password@]host:4222` (several servers
            comma-separated), `redis://[:password@]host:6379/0`; `wss://`, `tls://`, `rediss://` with TLS.
        patterns: at least one, e.g. `flowgauge.v1.bybit.>`, `flowgauge.v1.*.BTC-USDT-USDT`. Only flowgauge
            topics (under `flowgauge.v1.`) are subscribed to and yielded: `>` means `flowgauge.v1.>`.
        token: the embedded bus's bearer token, the NATS token, or the Redis password.
        reconnect: on a lost connection yield `Interrupted` and reconnect (True), or raise `ConnectionLost`.
        stale_after_s: a current value is stale when its instrument was silent this long (3 heartbeats).
        open_timeout_s: deadline of one connection attempt.
        queue_size: bound of the NATS and Redis transports' own queue (oldest dropped, counted in `dropped`).
        backoff_initial_s, backoff_max_s: reconnect delays, doubling from the first to the cap, jittered.
        nats_stream: the JetStream state stream's name (default FLOWGAUGE_STATE, the daemon's default).
        redis_last_key_prefix: the daemon's `bus.redis.last_key_prefix` (default `flowgauge:last:`).

    Raises:
        InvalidBusURL: an unknown scheme or an unusable URL.
        ValueError: no pattern, a pattern that is not valid, or one that matches no flowgauge topic.
    """
    return Subscription(url, patterns, token=token, reconnect=reconnect, stale_after_s=stale_after_s,
                        open_timeout_s=open_timeout_s, queue_size=queue_size,
                        backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s,
                        nats_stream=nats_stream, redis_last_key_prefix=redis_last_key_prefix)


class Subscription:
    """A live subscription; use `subscribe()` to make one, then `async with` it and iterate it.

    Iterating yields `Message`s (current values first, `snapshot` True, then live ones) and, when the
    connection drops and `reconnect` is on, one `Interrupted` marker per outage; the current values of
    the new connection follow it. Iteration ends only when the subscription is closed.

    Entering raises the `SubscriberError`s of the first connection attempt (`BusUnreachable`,
    `Unauthorized`, `NotABus`, `InvalidBusURL`, `SubscribeRejected`); later attempts retry what can heal
    (unreachable, not answering yet) and raise what cannot (`Unauthorized`, `InvalidBusURL`).
    """

    def __init__(self, url: str, patterns: tuple[str, ...] | list[str], *, token: str | None = None,
                 reconnect: bool = True, stale_after_s: float = 15.0, open_timeout_s: float = 10.0,
                 queue_size: int = 10000, backoff_initial_s: float = 0.25, backoff_max_s: float = 5.0,
                 nats_stream: str | None = None, redis_last_key_prefix: str | None = None) -> None:
        scheme = urlsplit(url.split(",")[0].strip()).scheme
        if scheme not in _SCHEMES:
            raise InvalidBusURL(f"unknown bus URL scheme in {shown_url(url)!r}: use ws:// or wss:// (embedded bus), "
                                f"nats:// or tls:// (NATS), redis:// or rediss:// (Redis)")
        if stale_after_s <= 0 or open_timeout_s <= 0 or queue_size < 1 or backoff_initial_s <= 0 \
                or backoff_max_s < backoff_initial_s:
            raise ValueError("stale_after_s, open_timeout_s, backoff_initial_s must be > 0, queue_size >= 1, "
                             "backoff_max_s >= backoff_initial_s")
        self.url = url
        self.patterns = [p.pattern for p in validate(patterns)]
        self._kind = _SCHEMES[scheme]
        # Only flowgauge topics, whatever the patterns: a shared broker carries other applications' subjects
        # (and, on NATS, this connection's own JetStream API requests), which `>` would otherwise subscribe to.
        narrowed = flowgauge_only(self.patterns)
        self._wanted = [TopicPattern(p) for p in narrowed]
        self._listen = list(dict.fromkeys([*narrowed, *heartbeat_patterns(narrowed)]))
        self._token = token
        self._reconnect = reconnect
        self.stale_after_s = stale_after_s
        self._open_timeout_s = open_timeout_s
        self._queue_size = queue_size
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._nats_stream = nats_stream
        self._redis_prefix = redis_last_key_prefix
        self._transport: Transport | None = None
        self._closing = False
        self._closed = asyncio.Event()  # set by close(): ends a reconnect backoff at once
        self._latest: dict[str, Message] = {}
        self._heard: dict[object, float] = {}  # instrument (or topic) -> wall time it was last heard of
        # Instruments whose final status (RETIRED) arrived, with when it was heard of: never stale, until anything
        # newer of the instrument arrives (a daemon restarted with the instrument listed again).
        self._retired: dict[object, float] = {}
        self._dropped_before = 0
        self.interruptions = 0
        """How many times the connection was lost (each yielded one `Interrupted`)."""

    # ---------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Subscription:
        self._closing = False
        self._closed.clear()
        self._transport = await self._open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; a running `async for` then ends. Idempotent."""
        self._closing = True
        self._closed.set()
        if self._transport is not None:
            await self._transport.close()

    # ---------------------------------------------------------------------------------------- state

    def latest(self) -> dict[str, dict[str, Any]]:
        """topic -> current payload, for every matching topic seen (trades excluded: they are not state)."""
        return {topic: message.payload for topic, message in self._latest.items()}

    def current(self) -> dict[str, Message]:
        """topic -> the `Message` carrying its current value (`age_s`, `snapshot`, `data` available)."""
        return dict(self._latest)

    def is_stale(self, topic: str) -> bool:
        """True if nothing of the topic's instrument (payload or heartbeat) arrived for `stale_after_s`. A retired
        instrument (see `is_retired`) is never stale: its daemon said it ended, nothing more will come."""
        key = _heard_key(topic)
        if key in self._retired:
            return False
        heard = self._heard.get(key)
        return heard is None or time.time() - heard > self.stale_after_s

    def is_retired(self, topic: str) -> bool:
        """True once the topic's instrument published its final status, state RETIRED (it expired or was delisted:
        its current values are its last ones, and nothing of it follows)."""
        return _heard_key(topic) in self._retired

    def stale_topics(self) -> set[str]:
        """The topics in `latest()` whose value is stale (see `is_stale`)."""
        return {topic for topic in self._latest if self.is_stale(topic)}

    @property
    def dropped(self) -> int:
        """Live messages dropped by this client's bounded queue because the caller read too slowly."""
        return self._dropped_before + (self._transport.dropped if self._transport is not None else 0)

    # ---------------------------------------------------------------------------------------- iteration

    async def __aiter__(self) -> AsyncIterator[Message | Interrupted]:
        if self._transport is None:
            raise RuntimeError("use `async with flowgauge.subscribe(...)` before iterating")
        while True:
            transport = self._transport
            try:
                async for message in transport.messages():
                    if self._closing:
                        return  # what was still queued when the caller closed is not theirs any more
                    self._note(message)
                    if any(p.matches(message.topic) for p in self._wanted):
                        if not message.topic.startswith(_NOT_STATE):
                            self._latest[message.topic] = message
                        yield message
                return  # ended quietly: closed by the caller
            except ConnectionLost as exc:
                if self._closing:
                    return
                if not self._reconnect:
                    raise
                lost = str(exc)
            self.interruptions += 1
            yield Interrupted(lost, time.time())
            self._dropped_before += transport.dropped
            await transport.close()
            reopened = await self._reopen()
            if reopened is None:
                return
            self._transport = reopened

    def _note(self, message: Message) -> None:
        """Remember when the message's instrument was last heard of (for staleness)."""
        if message.snapshot:
            ts = message.ts_publish  # a current value is as fresh as its publication, not its delivery
            heard = ts / _NS_PER_S if ts is not None else 0.0
        else:
            heard = time.time()
        key = _heard_key(message.topic)
        if heard > self._heard.get(key, 0.0):
            self._heard[key] = heard
        if message.topic.startswith(_STATUS):
            try:
                payload = message.payload
            except ValueError:
                return  # not JSON: another publisher's data, yielded as it came
            if isinstance(payload, dict) and payload.get("state") == "RETIRED":
                self._retired[key] = max(heard, self._retired.get(key, 0.0))
                return
        retired_at = self._retired.get(key)
        if retired_at is not None and heard > retired_at:
            del self._retired[key]  # the instrument is live again: staleness applies as before

    # ---------------------------------------------------------------------------------------- connecting

    def _make(self) -> Transport:
        options: dict[str, Any] = {"token": self._token, "open_timeout_s": self._open_timeout_s}
        if self._kind == "ws":
            from flowgauge.sdk.ws_transport import WebsocketTransport

            return WebsocketTransport(self.url, self._listen, **options)
        if self._kind == "nats":
            from flowgauge.sdk.nats_transport import DEFAULT_STREAM, NatsTransport

            return NatsTransport(self.url, self._listen, queue_size=self._queue_size,
                                 stream=self._nats_stream or DEFAULT_STREAM, **options)
        from flowgauge.sdk.redis_transport import DEFAULT_LAST_KEY_PREFIX, RedisTransport

        return RedisTransport(self.url, self._listen, queue_size=self._queue_size,
                              last_key_prefix=self._redis_prefix or DEFAULT_LAST_KEY_PREFIX, **options)

    async def _open(self) -> Transport:
        transport = self._make()
        await transport.open()
        return transport

    async def _reopen(self) -> Transport | None:
        """Reconnect with jittered exponential backoff until it works, the caller closes, or it cannot heal."""
        delay, cap = self._backoff
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), random.uniform(delay / 2, delay))
            if self._closing:
                return None
            try:
                transport = await self._open()
            except (Unauthorized, InvalidBusURL):
                if self._closing:
                    return None
                raise  # a changed password or URL does not heal by waiting
            except Exception:
                delay = min(delay * 2, cap)
                continue
            if self._closing:
                # close() came while this connection was being made: nobody will close it after this.
                await transport.close()
                return None
            return transport
        return None

    def __repr__(self) -> str:
        return f"Subscription({shown_url(self.url)!r}, {self.patterns!r})"


def _heard_key(topic: str) -> object:
    key = instrument_key(topic)
    return key if key is not None else topic
