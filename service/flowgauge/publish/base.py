"""The publisher protocol every bus backend implements, and the null publisher used by benchmarks.

Sits at the top of the engine -> publishers edge. The engine holds a list of `Publisher`s and calls
`publish(topic, payload_bytes)` synchronously on every event, so a publisher must never block the loop and
never raise because it is overloaded: it buffers within a bound, drops by its documented policy and counts
the drop.
Must not import `flowgauge.telemetry` (a higher layer): what a publisher reports goes through the small
`PublishTelemetry` protocol below, which `flowgauge.telemetry.instruments.Telemetry` satisfies structurally.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable

__all__ = ["NullPublisher", "PublishTelemetry", "Publisher"]


@runtime_checkable
class Publisher(Protocol):
    """A pub/sub backend: embedded fan-out, NATS, Redis, ...

    Lifecycle: `await start()` once, then any number of `publish` calls from the event-loop thread, then
    `await close()` (idempotent), which releases every task, socket and buffer the publisher owns.
    """

    async def start(self) -> None:
        """Connect / bind; return when `publish` may be called."""
        ...

    def publish(self, topic: str, payload: bytes) -> None:
        """Hand one encoded payload (`codec.encode`) for `topic` (`topics.book_topic` ...) to the backend.

        Synchronous and non-blocking. Must not raise on overflow: drop by policy and count it.
        """
        ...

    async def close(self) -> None:
        """Flush within a bounded time, then release everything. Idempotent."""
        ...


class PublishTelemetry(Protocol):
    """What any publisher reports; implemented by `flowgauge.telemetry.instruments.Telemetry`.

    `backend` is a small fixed vocabulary (`embedded`, `nats`, `redis`, `null`).
    """

    def count_published(self, backend: str, n: int = 1) -> None:
        """`n` messages were accepted by the backend (`flowgauge_published_messages_total`)."""
        ...

    def count_publish_dropped(self, backend: str, n: int = 1, *, reason: str = "queue_full") -> None:
        """`n` messages were dropped (`flowgauge_publish_dropped_total{backend,reason}`).

        `reason` is a small fixed vocabulary: `queue_full` (the publisher's outbox evicted its oldest message),
        `buffer_full` (the client library refused a message while reconnecting), `send_failed` (the broker
        call failed), `closed` (the connection was closed for good), `subscriber_full` (the embedded bus
        evicted the oldest message of a subscriber's buffer).
        """
        ...


class NullPublisher:
    """Accepts and discards everything, counting messages and bytes. For benchmarks and dry runs.

    Every call to `publish` increments `published` and adds the payload length to `published_bytes`; the
    payload is then dropped on purpose, so nothing is ever buffered.
    """

    backend = "null"

    def __init__(self) -> None:
        self.published = 0
        self.published_bytes = 0
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    def publish(self, topic: str, payload: bytes) -> None:
        self.published += 1
        self.published_bytes += len(payload)

    async def close(self) -> None:
        self.closed = True

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
