"""When a websocket message really arrived, as opposed to when the loop got to it.

`ClientConnection.recv()` hands out messages the library has already read and queued; a timestamp taken when
it returns says when we got to the message, so a loop that falls behind would look punctual. This connection
class stamps the moment the transport delivered the bytes (`data_received`) and maps each queued data frame
to it, so `arrival_ns()` after a `recv()` is the message's honest receive time: the difference to "now" is the
time it waited behind other messages. That is what backlog conflation (issue 8 item 6) is decided on, and what
the receive -> publish latency then includes.

It relies on two details of websockets' asyncio implementation (checked on 17.4): the assembler
(`recv_messages`, created in `connection_made`) is fed through `put` from `data_received`, and its frame queue
has a length. If either is missing the class falls back to the time `recv()` returned, never to a wrong value.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from websockets.asyncio.client import ClientConnection

__all__ = ["ArrivalStampedConnection"]


class ArrivalStampedConnection(ClientConnection):
    """A `ClientConnection` that knows when the bytes of the message `recv()` last returned arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._frames_in = 0  # data frames handed to the assembler so far
        # (frame count after a chunk, ns the chunk arrived): one entry per chunk that carried data frames,
        # dropped once its frames are consumed; the assembler's own high-water mark (max_queue) pauses
        # reading, which bounds it.
        self._chunks: deque[tuple[int, int]] = deque()
        self._stamping = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        assembler = getattr(self, "recv_messages", None)
        put = getattr(assembler, "put", None)
        frames = getattr(assembler, "frames", None)
        if put is None or frames is None or not hasattr(frames, "__len__"):
            return  # another websockets layout: arrival_ns() falls back to "now"

        def counting_put(frame: Any) -> None:
            self._frames_in += 1
            put(frame)

        assembler.put = counting_put  # type: ignore[union-attr]
        self._stamping = True

    def data_received(self, data: bytes) -> None:
        ts = time.time_ns()
        before = self._frames_in
        super().data_received(data)
        if self._frames_in != before:
            self._chunks.append((self._frames_in, ts))

    def arrival_ns(self) -> int:
        """When the last frame of the message `recv()` just returned arrived (now, if that is unknown)."""
        if not self._stamping:
            return time.time_ns()
        consumed = self._frames_in - len(self.recv_messages.frames)
        chunks = self._chunks
        while chunks and chunks[0][0] < consumed:
            chunks.popleft()
        return chunks[0][1] if chunks else time.time_ns()
