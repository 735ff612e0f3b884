"""What every transport gives the subscription, and the parts the broker transports share.

A transport connects, subscribes, and then yields messages: the current value of every matching topic first
(`snapshot` True), then the live stream. It raises `ConnectionLost` when its connection ends without the
caller asking, and the `SubscriberError`s of `flowgauge.client` when it cannot connect. It does not
reconnect: `Subscription` does that, the same way for every transport.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from flowgauge.sdk.message import Message

__all__ = ["LiveBuffer", "Transport", "drop_superseded"]


class Transport(Protocol):
    @property
    def dropped(self) -> int:
        """Live messages this transport's own bounded buffer dropped (oldest first)."""

    async def open(self) -> None:
        """Connect and subscribe; raises a `SubscriberError` when that fails."""

    def messages(self) -> AsyncIterator[Message]:
        """Current values, then live messages; raises `ConnectionLost` when the connection ends."""
        ...

    async def close(self) -> None:
        """Close; a running `messages()` then ends quietly. Idempotent."""


class LiveBuffer:
    """Bounded queue between a broker client's callbacks and the iterator: oldest dropped first, counted.

    Broker callbacks must never block, and a strategy that stops reading must not grow memory without
    bound; for market state the newest messages are the ones worth keeping.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("queue_size must be at least 1")
        self._items: deque[Message] = deque(maxlen=capacity)
        self._ready = asyncio.Event()
        self._ended: str | None = None  # why the connection ended, once it did
        self.dropped = 0

    def put(self, message: Message) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(message)
        self._ready.set()

    def end(self, reason: str) -> None:
        """The connection is gone: `get` returns what is queued, then None."""
        if self._ended is None:
            self._ended = reason
        self._ready.set()

    @property
    def ended(self) -> str | None:
        return self._ended

    async def get(self) -> Message | None:
        """The next message, or None once the connection ended and the queue is empty."""
        while not self._items:
            if self._ended is not None:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


def drop_superseded(live: Message, newest: dict[str, int]) -> bool:
    """True if a live message that arrived while current values were fetched is older than the value sent.

    A broker transport subscribes first and fetches current values second, so nothing is lost in between;
    a live message queued meanwhile may be older than the current value already yielded for its topic.
    `newest` maps topic -> ts_publish of the current value yielded; an entry is dropped at the first live
    message that is newer, after which the topic needs no more checks.
    """
    ts_value = newest.get(live.topic)
    if ts_value is None:
        return False
    ts_live = live.ts_publish
    if ts_live is not None and ts_live <= ts_value:
        return True
    del newest[live.topic]
    return False
