"""Subscriber client for strategies: the embedded bus's websocket fan-out.

    async with EmbeddedSubscriber("ws://127.0.0.1:8765", ["flowgauge.v1.bybit.>"]) as sub:
        async for topic, payload in sub:
            ...

Payloads are decoded JSON objects as documented in the README's topic reference.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect


class SubscribeRejected(RuntimeError):
    """The bus refused a subscription (bad pattern)."""


class EmbeddedSubscriber:
    """Connects, subscribes to NATS-style patterns, yields `(topic, payload)` pairs."""

    def __init__(self, url: str, patterns: Sequence[str], *, token: str | None = None,
                 open_timeout_s: float = 10.0) -> None:
        self.url = url
        self.patterns = list(patterns)
        self.token = token
        self.open_timeout_s = open_timeout_s
        self._ws: ClientConnection | None = None

    async def __aenter__(self) -> EmbeddedSubscriber:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        self._ws = await connect(self.url, additional_headers=headers, open_timeout=self.open_timeout_s,
                                 max_size=None)
        await self._ws.send(orjson.dumps({"op": "subscribe", "patterns": self.patterns}).decode())
        reply = orjson.loads(await self._ws.recv())
        if reply.get("op") != "subscribed":
            await self._ws.close()
            raise SubscribeRejected(str(reply.get("error", reply)))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        assert self._ws is not None, "use `async with`"
        async for raw in self._ws:
            message = orjson.loads(raw)
            if "topic" in message:
                yield message["topic"], message["payload"]


async def tail(url: str, pattern: str, *, token: str | None = None, count: int = 0) -> None:
    """Print every matching payload as one JSON line (the `flowgauge tail` command)."""
    seen = 0
    async with EmbeddedSubscriber(url, [pattern], token=token) as subscriber:
        async for topic, payload in subscriber:
            sys.stdout.write(orjson.dumps({"topic": topic, "payload": payload}).decode() + "\n")
            sys.stdout.flush()
            seen += 1
            if count and seen >= count:
                return
