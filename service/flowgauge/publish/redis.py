"""The Redis publisher: PUBLISH on the topic names, the last value of every topic under a key with a TTL, and
optionally an approximately capped stream per topic.

Sits at the end of the engine -> publishers edge, beside the embedded bus. `publish(topic, payload)` only appends
to a bounded `Outbox` (drop-oldest, counted as `queue_full`) and returns; one sender task writes batches to
Redis, each batch one pipeline (no transaction):

    PUBLISH <topic> <payload>                                   every message, channel = topic
    XADD <stream_key_prefix><topic> MAXLEN ~ <n> * payload <p>  every message, when streams are on
    SET <last_key_prefix><topic> <payload> PX <ttl>             once per topic per batch, its newest payload
                                                                (not for trades topics: a trade is an event,
                                                                and a last trade read as current would mislead)

Late joiners read the current value of a topic with `GET <last_key_prefix><topic>` (or SCAN the prefix). Redis
7.0 has no per-field hash expiry, so each topic has its own string key; a refresher task re-applies the TTL of
every key this process wrote every `last_ttl_s / 3`, so a quiet topic's value stays readable while the daemon
runs and disappears `last_ttl_s` after it stops (or loses Redis).

Failure handling (never blocks or crashes the engine): when a batch fails (connection refused or lost, timeout,
Redis error) its messages are counted as `send_failed` (a pipeline is not atomic: part of it may have been
applied) and the publisher waits, pinging Redis with a capped exponential backoff, without draining the outbox,
which meanwhile keeps the newest `queue_size` messages. Publishing resumes by itself when a ping succeeds.

Must not import `flowgauge.telemetry` (a higher layer): counters go through `PublishTelemetry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from flowgauge.logs import event
from flowgauge.publish.base import PublishTelemetry
from flowgauge.publish.outbox import BrokerAccount, Outbox, describe_error, report_crash
from flowgauge.publish.topics import TRADES_ROOT

__all__ = ["RedisPublisher"]

log = logging.getLogger(__name__)

BACKEND = "redis"

# Messages per pipeline: large enough to amortise the round trip, small enough that one batch is a short write.
_BATCH = 512
_BACKOFF_INITIAL_S = 0.05
# Topics whose last-value key is kept alive; topics come from configured instruments (hundreds), the bound only
# protects against a caller publishing unbounded distinct topics.
_MAX_TOPICS = 100_000
_FAILURES = (redis.exceptions.RedisError, OSError, TimeoutError)


class RedisPublisher:
    """Publishes to Redis; implements `Publisher`.

    Args:
        url: `redis://[[user]:password@]host:port/db` or `rediss://...`.
        telemetry: where counters go; None counts only locally (`published`, `dropped`).
        queue_size: bound of the outbox, in messages (drop-oldest beyond it).
        connect_timeout_s: deadline of one connection attempt and of one pipeline.
        reconnect_max_s: cap of the delay between pings while Redis is unreachable.
        last_key_prefix: the last value of topic T is the string key `<prefix>T`.
        last_ttl_s: TTL of a last-value key, refreshed every third of it while running.
        streams: also XADD every payload to `<stream_key_prefix>T` (one field, `payload`).
        stream_key_prefix: prefix of the stream keys.
        stream_maxlen: approximate cap (`MAXLEN ~`) of each stream.
        password: the password (AUTH), when the URL holds none; a user name may be in the URL.
    """

    backend = BACKEND

    def __init__(
        self,
        url: str,
        *,
        telemetry: PublishTelemetry | None = None,
        queue_size: int = 10_000,
        connect_timeout_s: float = 2.0,
        reconnect_max_s: float = 5.0,
        last_key_prefix: str = "flowgauge:last:",
        last_ttl_s: float = 30.0,
        streams: bool = False,
        stream_key_prefix: str = "flowgauge:stream:",
        stream_maxlen: int = 10_000,
        password: str | None = None,
    ) -> None:
        if last_ttl_s <= 0:
            raise ValueError(f"last_ttl_s must be > 0, got {last_ttl_s}")
        self._url = url
        self._password = password
        self._telemetry = telemetry
        self._account = BrokerAccount(BACKEND, telemetry)
        self._timeout_s = connect_timeout_s
        self._reconnect_max_s = reconnect_max_s
        self._last_prefix = last_key_prefix
        self._ttl_ms = max(1, round(last_ttl_s * 1000))
        self._refresh_every_s = last_ttl_s / 3
        self._streams = streams
        self._stream_prefix = stream_key_prefix
        self._stream_maxlen = stream_maxlen
        self.outbox = Outbox(queue_size, self._account.count_queue_full)
        self._client: redis.asyncio.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._topics: set[str] = set()  # topics whose last-value key this process keeps alive
        self._up = False
        self._closed = False
        self.published = 0
        """Messages written to Redis (their pipeline succeeded)."""

    @property
    def dropped(self) -> int:
        """Messages dropped, every reason together."""
        return self._account.dropped

    @property
    def connected(self) -> bool:
        """True while the last round trip to Redis succeeded."""
        return self._up

    def status(self) -> dict[str, object]:
        """What /status shows for this backend."""
        return {
            "connected": self.connected,
            "published": self.published,
            "dropped": self.dropped,
            "queued": len(self.outbox),
            "auth": self.auth,
        }

    @property
    def auth(self) -> str | None:
        """`password` (given apart from the URL), `url` (the URL holds one) or None; never the secret itself."""
        if self._password:
            return "password"
        parts = urlsplit(self._url)
        return "url" if parts.password or "password=" in parts.query else None

    # ------------------------------------------------------------------------------------ Publisher

    async def start(self) -> None:
        """Start the sender and the TTL refresher; connecting happens on first use. Idempotent."""
        if self._closed:
            raise RuntimeError("the Redis publisher is closed")
        if self._client is not None:
            return
        self._client = redis.asyncio.Redis.from_url(
            self._url,
            socket_connect_timeout=self._timeout_s,
            socket_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 0),  # the sender retries, with its own backoff, without losing the outbox
            health_check_interval=0,
            password=self._password,  # a password in the URL, if any, takes precedence (config allows one only)
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name="publish:redis"),
            loop.create_task(self._refresh(), name="publish:redis:ttl"),
        ]
        for task in self._tasks:
            task.add_done_callback(report_crash)

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue one message (never blocks; drops the oldest queued message when the outbox is full)."""
        self.outbox.put(topic, payload)

    async def close(self) -> None:
        """Write what is queued while Redis answers, then stop. Idempotent; bounded by the caller (app.py)."""
        if self._closed:
            return
        self._closed = True
        self.outbox.close()
        sender = self._tasks[0] if self._tasks else None
        others = self._tasks[1:]
        for task in others:
            task.cancel()
        if sender is not None:
            if not self._up:
                sender.cancel()  # Redis is not answering: what is queued cannot be written now
            with contextlib.suppress(asyncio.CancelledError, Exception):  # a crash was logged when it happened
                await sender
        for task in others:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            await self._client.aclose()

    # ------------------------------------------------------------------------------------ sender

    async def _run(self) -> None:
        client = self._client
        assert client is not None
        outbox = self.outbox
        await self._wait_until_up(client)
        while True:
            await outbox.wait()
            batch = outbox.take(_BATCH)
            if not batch:
                return  # closed and drained
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._write(client, batch)
            except _FAILURES as exc:
                self._account.count_drop(len(batch), "send_failed")
                self._went_down(exc)
                if outbox.closed:
                    return
                await self._wait_until_up(client)
                continue
            self.published += len(batch)
            if self._telemetry is not None:
                self._telemetry.count_published(BACKEND, len(batch))
            await asyncio.sleep(0)  # let the engine run between batches of a long backlog

    async def _write(self, client: redis.asyncio.Redis, batch: list[tuple[str, bytes]]) -> None:
        pipe = client.pipeline(transaction=False)
        newest: dict[str, bytes] = {}
        for topic, payload in batch:
            pipe.publish(topic, payload)
            if self._streams:
                pipe.xadd(self._stream_prefix + topic, {"payload": payload}, maxlen=self._stream_maxlen,
                          approximate=True)
            if not topic.startswith(TRADES_ROOT):  # trades are events: no last-value key (a stale "current" trade)
                newest[topic] = payload
        for topic, payload in newest.items():
            pipe.set(self._last_prefix + topic, payload, px=self._ttl_ms)
        await pipe.execute()
        if len(self._topics) < _MAX_TOPICS:
            self._topics.update(newest)

    async def _wait_until_up(self, client: redis.asyncio.Redis) -> None:
        """Ping until Redis answers, backing off up to `reconnect_max_s`."""
        delay = _BACKOFF_INITIAL_S
        while True:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await client.ping()
            except _FAILURES as exc:
                self._went_down(exc)
                await asyncio.sleep(delay)  # retry pacing while Redis is unreachable
                delay = min(self._reconnect_max_s, delay * 2)
                continue
            if not self._up:
                self._up = True
                event(log, logging.INFO, "redis_connected")
            return

    async def _refresh(self) -> None:
        """Keep every last-value key alive while running: a quiet topic's value must not expire."""
        while True:
            await asyncio.sleep(self._refresh_every_s)  # the refresh period, not a synchronisation wait
            client = self._client
            if client is None or not self._up or not self._topics:
                continue
            pipe = client.pipeline(transaction=False)
            for topic in self._topics:
                pipe.pexpire(self._last_prefix + topic, self._ttl_ms)
            try:
                async with asyncio.timeout(self._timeout_s):
                    await pipe.execute()
            except _FAILURES as exc:
                self._went_down(exc)

    def _went_down(self, exc: BaseException) -> None:
        if self._up:
            self._up = False
            event(log, logging.WARNING, "redis_disconnected", error=describe_error(exc))
        else:
            self._account.log_error("redis_unreachable", exc)
