"""The bounded outbox between the engine and a broker publisher (NATS, Redis): drop-oldest, every drop counted.

Sits inside `flowgauge.publish`, under the broker publishers. The engine calls `Publisher.publish` synchronously
on every event; a broker publisher puts the message here and returns at once, and its own sender task takes
messages out and writes them to the broker. The outbox never blocks the engine and never grows past `maxsize`.

Overflow policy: when the outbox is full, a new message evicts the OLDEST one (counted as `queue_full`). For
market state the newest value of a topic is the one worth delivering, so while a broker is down the outbox
holds the most recent `maxsize` messages, delivered in order once the broker is back.

Not thread-safe: call everything from the event-loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from flowgauge.logs import BurstLimiter, event
from flowgauge.publish.base import PublishTelemetry

__all__ = ["BrokerAccount", "Outbox", "OutboxMessage", "describe_error", "report_crash"]

log = logging.getLogger(__name__)

OutboxMessage = tuple[str, bytes]
"""(topic, encoded payload)."""


class Outbox:
    """A bounded FIFO of `(topic, payload)` with a drop-oldest policy and a wake-up for one consumer.

    Args:
        maxsize: messages held at most (>= 1).
        on_drop: called with the number of messages evicted, each time the policy drops some.
    """

    __slots__ = ("_closed", "_on_drop", "_queue", "_waiter", "dropped", "maxsize")

    def __init__(self, maxsize: int, on_drop: Callable[[int], None]) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._queue: collections.deque[OutboxMessage] = collections.deque()
        self._on_drop = on_drop
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0
        """Messages evicted because the outbox was full."""

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, topic: str, payload: bytes) -> None:
        """Append one message; evicts (and counts) the oldest when full. Ignored once closed."""
        if self._closed:
            return
        queue = self._queue
        if len(queue) >= self.maxsize:
            queue.popleft()
            self.dropped += 1
            self._on_drop(1)
        queue.append((topic, payload))
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def take(self, limit: int) -> list[OutboxMessage]:
        """Remove and return up to `limit` of the oldest messages (possibly none)."""
        queue = self._queue
        n = min(limit, len(queue))
        return [queue.popleft() for _ in range(n)]

    async def wait(self) -> None:
        """Return once at least one message is queued or the outbox is closed."""
        while not self._queue and not self._closed:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    def close(self) -> None:
        """Refuse new messages and wake the consumer; what is queued can still be taken."""
        self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def closed(self) -> bool:
        return self._closed


class BrokerAccount:
    """What a broker publisher counts and how it logs failures: drops by reason (locally and in telemetry) and
    error log lines limited to one per name per burst, so a broker that stays down cannot flood the log."""

    def __init__(self, backend: str, telemetry: PublishTelemetry | None) -> None:
        self._backend = backend
        self._telemetry = telemetry
        self._errors = BurstLimiter(30.0)
        self.dropped = 0
        """Messages dropped, every reason together."""

    def count_queue_full(self, n: int) -> None:
        """The outbox's drop callback."""
        self.count_drop(n, "queue_full")

    def count_drop(self, n: int, reason: str) -> None:
        self.dropped += n
        if self._telemetry is not None:
            self._telemetry.count_publish_dropped(self._backend, n, reason=reason)

    def log_error(self, name: str, exc: BaseException, **fields: Any) -> None:
        suppressed = self._errors.allow(name)
        if suppressed is not None:
            event(log, logging.WARNING, name, error=describe_error(exc), suppressed=suppressed, **fields)


def report_crash(task: asyncio.Task[None]) -> None:
    """Done-callback of a publisher's task: log one that died of a bug (publishing to that backend stopped,
    its outbox now only drops, which the drop counter shows)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("publisher_task_crashed: task=%s", task.get_name(), exc_info=exc)


def describe_error(exc: BaseException) -> str:
    """`Type: message`, short: what an operator needs in one log field."""
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:200]
