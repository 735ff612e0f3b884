"""Redis (redis:// and rediss://) as an SDK transport: PSUBSCRIBE, current values from the last-value keys.

The daemon keeps the last payload of topic T in the string key `<last_key_prefix>T` (default
`flowgauge:last:`) with a TTL it refreshes while it runs, so current values are a SCAN over the prefix and
an MGET. Redis globs let `*` cross dots, so the NATS-style patterns become wider globs and every channel is
filtered here with NATS semantics; where globs overlap, only one copy of a message is kept. Only flowgauge
topics are subscribed to: each pattern is narrowed to what it matches under `flowgauge.v1.` first, so `>`
becomes the glob `flowgauge.v1.*`, not `*`, which would receive every channel of a shared Redis server.

The live subscription is made before the keys are read, so nothing published in between is lost; a live
message queued meanwhile and older than the value already yielded is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from flowgauge.client import (
    BusUnreachable,
    ConnectionLost,
    InvalidBusURL,
    NotABus,
    Unauthorized,
    shown_url,
    url_problem,
)
from flowgauge.publish.topics import TopicPattern
from flowgauge.sdk.message import Message
from flowgauge.sdk.patterns import RedisGlobs, flowgauge_only
from flowgauge.sdk.transport import LiveBuffer, drop_superseded

__all__ = ["DEFAULT_LAST_KEY_PREFIX", "RedisTransport"]

DEFAULT_LAST_KEY_PREFIX = "flowgauge:last:"
_SCAN_COUNT = 500  # keys per SCAN step
_MGET_CHUNK = 256  # keys per MGET


class RedisTransport:
    def __init__(self, url: str, patterns: Sequence[str], *, token: str | None, open_timeout_s: float,
                 queue_size: int, last_key_prefix: str = DEFAULT_LAST_KEY_PREFIX) -> None:
        self.url = url
        self._shown_url = shown_url(url)  # what messages show: the URL without its secrets
        patterns = flowgauge_only(patterns)  # `>` must not become the glob `*`: see the module doc
        self._filters = [TopicPattern(p) for p in patterns]
        self._globs = RedisGlobs(patterns)
        self._token = token
        self._open_timeout_s = open_timeout_s
        self._prefix = last_key_prefix
        self._buffer = LiveBuffer(queue_size)
        self._current: list[Message] = []
        self._client: Any = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def dropped(self) -> int:
        return self._buffer.dropped

    async def open(self) -> None:
        import redis.asyncio as aioredis
        from redis.exceptions import AuthenticationError, InvalidResponse, RedisError, ResponseError

        if not self.url.startswith(("redis://", "rediss://")):
            raise InvalidBusURL(f"not a Redis URL: {self._shown_url!r} (looks like redis://127.0.0.1:6379/0)")
        try:
            options: dict[str, Any] = {"socket_connect_timeout": self._open_timeout_s}
            if self._token:
                options["password"] = self._token
            self._client = aioredis.from_url(self.url, **options)
        except ValueError as exc:
            raise InvalidBusURL(f"invalid Redis URL {self._shown_url!r}: {url_problem(self.url, exc)}") from None
        try:
            async with asyncio.timeout(self._open_timeout_s):
                await self._client.ping()
                self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                await self._pubsub.psubscribe(*self._globs.globs)
            self._reader = asyncio.create_task(self._read(), name="flowgauge-sdk-redis-reader")
            async with asyncio.timeout(self._open_timeout_s * 3):
                self._current = await self._current_values()
        except AuthenticationError:
            await self.close()
            raise Unauthorized(f"Redis at {self._shown_url} refused the connection: authentication failed "
                               f"(password in the URL, or token=)") from None
        except ResponseError as exc:
            await self.close()
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise Unauthorized(f"Redis at {self._shown_url} requires a password (in the URL, or token=)") from None
            raise NotABus(f"{self._shown_url}: Redis refused a command ({exc})") from None
        except TimeoutError:
            await self.close()
            raise BusUnreachable(f"cannot connect to Redis at {self._shown_url}: no answer within "
                                 f"{self._open_timeout_s:g} s") from None
        except InvalidResponse:
            await self.close()
            raise NotABus(f"{self._shown_url} did not answer as a Redis server (is this the Redis port?)") from None
        except (RedisError, OSError) as exc:
            await self.close()
            if "closed by server" in str(exc).lower():
                # The TCP connection was accepted, then closed on the first command (an HTTP server answers a
                # PING with 400 and hangs up): something listens there, but not Redis.
                raise NotABus(f"{self._shown_url} accepted the connection and closed it on PING: is this a Redis "
                              f"server's port?") from None
            raise BusUnreachable(f"cannot connect to Redis at {self._shown_url}: {_first_line(exc)}") from None
        except BaseException:
            await self.close()
            raise

    async def messages(self) -> AsyncIterator[Message]:
        newest: dict[str, int] = {}
        for message in self._current:
            ts = message.ts_publish
            if ts is not None:
                newest[message.topic] = ts
            yield message
        self._current = []
        while (live := await self._buffer.get()) is not None:
            if newest and drop_superseded(live, newest):
                continue
            yield live
        if not self._closing:
            raise ConnectionLost(f"Redis at {self._shown_url}: {self._buffer.ended}")

    async def close(self) -> None:
        self._closing = True
        self._buffer.end("closed by the client")
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for closable in (self._pubsub, self._client):
            if closable is not None:
                with contextlib.suppress(Exception):
                    await closable.aclose()

    async def _read(self) -> None:
        """Move pubsub messages into the bounded buffer until the connection fails or stops answering.

        A connection whose peer vanished without a reset (a network path gone, a frozen host) reads nothing
        forever and raises nothing, and Redis sends no keepalive: after `open_timeout_s` of silence the reader
        sends a PING on the subscribed connection, and calls it lost when nothing (pong or message) arrives
        within `open_timeout_s` more.
        """
        from redis.exceptions import RedisError

        loop = asyncio.get_running_loop()
        quiet_s = self._open_timeout_s
        heard = loop.time()
        pinged: float | None = None
        try:
            while True:
                item = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=quiet_s / 2)
                now = loop.time()
                if item is None:  # silence (or a subscribe confirmation)
                    if pinged is not None and now - pinged >= quiet_s:
                        self._buffer.end(f"no answer from Redis for {now - heard:.0f} s (not even to a PING)")
                        return
                    if pinged is None and now - heard >= quiet_s:
                        await self._pubsub.ping()
                        pinged = now
                    continue
                heard, pinged = now, None
                if item.get("type") != "pmessage":
                    continue
                channel = _text(item["channel"])
                if self._globs.owner(channel) != _text(item["pattern"]):
                    continue  # another of our globs delivers this channel too: keep one copy
                if any(f.matches(channel) for f in self._filters):
                    data = item["data"]
                    self._buffer.put(Message(channel, data=data if isinstance(data, bytes) else data.encode()))
        except (RedisError, OSError) as exc:
            self._buffer.end(f"the connection failed ({_first_line(exc)})")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._buffer.end(f"the reader failed ({type(exc).__name__}: {_first_line(exc)})")

    async def _current_values(self) -> list[Message]:
        keys: list[bytes] = []
        for glob in self._globs.globs:
            async for key in self._client.scan_iter(match=_escape(self._prefix) + glob, count=_SCAN_COUNT):
                keys.append(key)
        topics = {_text(key)[len(self._prefix):]: key for key in keys}
        wanted = sorted(t for t in topics if any(f.matches(t) for f in self._filters))
        found: list[Message] = []
        for start in range(0, len(wanted), _MGET_CHUNK):
            chunk = wanted[start:start + _MGET_CHUNK]
            values = await self._client.mget([topics[t] for t in chunk])
            found.extend(Message(t, data=v, snapshot=True) for t, v in zip(chunk, values, strict=True) if v)
        return found


def _escape(prefix: str) -> str:
    """The key prefix as a literal in a Redis glob."""
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in prefix)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
