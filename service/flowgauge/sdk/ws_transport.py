"""The embedded bus (ws:// and wss://) as an SDK transport: `flowgauge.client.EmbeddedSubscriber` underneath.

The bus itself sends the current values first (frames marked `"snapshot": true`) and then the live stream
with nothing lost or reordered in between, and bounds each client's queue on its side (oldest dropped, or a
client too slow disconnected), so this transport adds nothing but the message type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from flowgauge.client import EmbeddedSubscriber
from flowgauge.sdk.message import Message

__all__ = ["WebsocketTransport"]


class WebsocketTransport:
    def __init__(self, url: str, patterns: Sequence[str], *, token: str | None, open_timeout_s: float) -> None:
        self._subscriber = EmbeddedSubscriber(url, patterns, token=token, open_timeout_s=open_timeout_s)

    @property
    def dropped(self) -> int:
        return 0  # the bus bounds and counts on its side (flowgauge_fanout_dropped_messages_total)

    async def open(self) -> None:
        await self._subscriber.__aenter__()

    async def messages(self) -> AsyncIterator[Message]:
        async for message in self._subscriber.messages():
            yield Message(message.topic, payload=message.payload, snapshot=message.snapshot)

    async def close(self) -> None:
        await self._subscriber.close()
