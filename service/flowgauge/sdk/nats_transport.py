"""NATS (nats:// and tls://) as an SDK transport: core subscriptions, current values from JetStream.

Current values come from the daemon's JetStream state stream (`bus.nats.stream`, one message per subject)
when it exists: the subjects it holds that match the patterns are listed (stream info with a subjects
filter) and the last message of each is read. Without the stream (core NATS only) a subscription starts
with no current values and the first live message of each topic is its first value.

The live subscriptions are made, and confirmed by the server, before the current values are read, so nothing
published in between is lost; a live message that was queued meanwhile and is older than the value already
yielded is dropped.
Only flowgauge topics are subscribed to: each pattern is narrowed to what it matches under `flowgauge.v1.`
(`>` is subscribed as `flowgauge.v1.>`, `*` is refused), with the same matches among flowgauge topics. A wider
subscription would receive every other application's subjects on a shared server, and this connection's own
JetStream API requests (`$JS.API...`) and their replies (`_INBOX...`): those were yielded as messages, and on
a server without JetStream the SDK's own `>` subscription counted as a responder, so no "no responders" answer
came and entering waited out `open_timeout_s`.
This client does not let nats-py reconnect by itself: the subscription reconnects, the same way on every
transport, and tells its caller about the interruption.
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
    SubscribeRejected,
    Unauthorized,
    shown_url,
)
from flowgauge.publish.topics import TopicPattern
from flowgauge.sdk.message import Message
from flowgauge.sdk.patterns import disjoint_cover, flowgauge_only
from flowgauge.sdk.transport import LiveBuffer, drop_superseded

__all__ = ["DEFAULT_STREAM", "NatsTransport"]

DEFAULT_STREAM = "FLOWGAUGE_STATE"
_PARALLEL_GETS = 32  # in-flight "last message of subject" requests while reading current values


class NatsTransport:
    def __init__(self, url: str, patterns: Sequence[str], *, token: str | None, open_timeout_s: float,
                 queue_size: int, stream: str = DEFAULT_STREAM) -> None:
        self.url = url
        self._shown_url = shown_url(url)  # what messages show: the URL without its secrets
        self._servers = [server.strip() for server in url.split(",") if server.strip()]
        patterns = flowgauge_only(patterns)  # never `>` itself: see the module doc
        self._filters = [TopicPattern(p) for p in patterns]
        self._cover = disjoint_cover(patterns)
        self._token = token
        self._open_timeout_s = open_timeout_s
        self._stream = stream
        self._buffer = LiveBuffer(queue_size)
        self._current: list[Message] = []
        self._nc: Any = None
        self._closing = False
        self._last_error = ""

    @property
    def dropped(self) -> int:
        return self._buffer.dropped

    async def open(self) -> None:
        from nats.aio.client import Client
        from nats.errors import Error as NatsError
        from nats.errors import NoServersError

        for server in self._servers:
            if not server.startswith(("nats://", "tls://")):
                raise InvalidBusURL(f"not a NATS URL: {shown_url(server)!r} (looks like nats://127.0.0.1:4222)")
        # The client is made here rather than by nats.connect() so that a failed connect can be closed: nats-py
        # leaves the socket of a failed handshake open when it does not reconnect by itself.
        self._nc = Client()
        guard = asyncio.timeout(self._open_timeout_s * (len(self._servers) + 1))
        try:
            # nats-py's own reconnect loop is off (max_reconnect_attempts=0 would mean "forever"; 1 still lets
            # it try each server twice); the subscription reconnects instead. The outer deadline is a guard.
            async with guard:
                await self._nc.connect(
                    servers=self._servers, token=self._token, allow_reconnect=False,
                    connect_timeout=max(1, round(self._open_timeout_s)), max_reconnect_attempts=1,
                    reconnect_time_wait=0, disconnected_cb=self._on_disconnected, closed_cb=self._on_disconnected,
                    error_cb=self._on_error, name="flowgauge-sdk", pending_size=0,
                    # A path that stops carrying bytes without a reset is noticed by unanswered pings; nats-py's
                    # default (every 2 minutes, 2 outstanding) left a dead subscription unnoticed for 4-6 minutes.
                    ping_interval=self._open_timeout_s, max_outstanding_pings=2,
                )
        except BaseException as exc:
            await self._close_failed()
            if isinstance(exc, NoServersError) or guard.expired():
                # No server took the TCP connection (nats-py tries every server before NoServersError), or
                # nothing at all happened before the deadline.
                raise _unreachable(self._shown_url, self._last_error, self._open_timeout_s) from None
            if isinstance(exc, NatsError):
                raise _connect_error(self._shown_url, exc, self._last_error) from None
            if isinstance(exc, TimeoutError):
                # A TCP connection was made (nats-py retries refused ones itself and ends with
                # NoServersError) but no NATS greeting followed: something else listens there.
                raise NotABus(f"{self._shown_url} accepted the connection but sent no NATS greeting within "
                              f"{max(1, round(self._open_timeout_s))} s: is this a NATS server's client "
                              f"port?") from None
            if isinstance(exc, OSError):
                raise BusUnreachable(f"cannot connect to NATS at {self._shown_url}: {_describe(exc)}") from None
            raise
        try:
            for pattern in self._cover:
                await self._nc.subscribe(pattern, cb=self._on_message)
            await self._confirm_subscriptions()  # the server has the subscriptions from here on
            self._current = await self._current_values()
        except BaseException as exc:
            await self.close()
            # Entering raises SubscriberErrors only (one line each), never a nats-py exception.
            if isinstance(exc, TimeoutError):  # nats-py's request timeouts are TimeoutErrors too
                raise BusUnreachable(f"NATS at {self._shown_url} took the connection but did not confirm the "
                                     f"subscription within {self._open_timeout_s:g} s") from None
            if isinstance(exc, NatsError):
                raise SubscribeRejected(f"NATS at {self._shown_url} refused the subscription: "
                                        f"{_first_line(exc)}") from None
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
            raise ConnectionLost(f"NATS at {self._shown_url}: {self._buffer.ended}")

    async def close(self) -> None:
        self._closing = True
        self._buffer.end("closed by the client")
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):  # a broken connection: nothing left to do with it
                await self._nc.close()

    async def _close_failed(self) -> None:
        """Close the client of a failed connect (its socket, its tasks), within a bound."""
        self._closing = True
        self._buffer.end("the connection failed")
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._open_timeout_s):
                    await nc.close()

    async def _confirm_subscriptions(self) -> None:
        """Return once the server holds the subscriptions made so far on this connection, within open_timeout_s.

        flush() is no such barrier: nats-py (2.16) writes flush()'s PING straight to the socket, ahead of the
        SUB commands still in its pending buffer, so its PONG can come back before the server has read a SUB,
        and a message published meanwhile reaches nobody. Only a round trip queued behind the SUBs proves they
        arrived: a subscription to an inbox of this connection and a message published to it. The server
        handles one connection's commands in order, so that message coming back means it had every SUB first.

        Raises:
            BusUnreachable: the probe did not come back within open_timeout_s, or the connection closed first.
        """
        from nats.errors import ConnectionClosedError
        from nats.errors import TimeoutError as NatsTimeoutError

        nc = self._nc
        probe = await nc.subscribe(nc.new_inbox())  # an `_INBOX.` subject: no subscription of ours matches it
        try:
            await nc.publish(probe.subject, b"")
            await probe.next_msg(timeout=self._open_timeout_s)
        except NatsTimeoutError:
            raise BusUnreachable(f"NATS at {self._shown_url} took the connection but did not confirm the "
                                 f"subscription within {self._open_timeout_s:g} s") from None
        except ConnectionClosedError:
            why = f" ({self._last_error})" if self._last_error else ""
            raise BusUnreachable(f"NATS at {self._shown_url} closed the connection before it confirmed the "
                                 f"subscription{why}") from None
        finally:
            if not nc.is_closed:
                await probe.unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        if any(f.matches(msg.subject) for f in self._filters):
            self._buffer.put(Message(msg.subject, data=msg.data))

    async def _on_disconnected(self) -> None:
        why = f" ({self._last_error})" if self._last_error else ""
        self._buffer.end(f"the connection closed{why}")

    async def _on_error(self, exc: Exception) -> None:
        # Not every error ends the connection (a slow-consumer notice does not): the disconnected callback
        # decides; this one only remembers what to say about it.
        self._last_error = f"{type(exc).__name__}: {exc}"[:200]

    async def _current_values(self) -> list[Message]:
        from nats.js.errors import NotFoundError, ServiceUnavailableError

        js = self._nc.jetstream(timeout=self._open_timeout_s)
        subjects: set[str] = set()
        try:
            for pattern in self._cover:
                info = await js.stream_info(self._stream, subjects_filter=pattern)
                subjects.update((info.state.subjects or {}).keys())
        except (NotFoundError, ServiceUnavailableError):
            return []  # no state stream (core NATS, or JetStream off): live messages only
        except Exception as exc:
            if type(exc).__name__ in ("NoRespondersError", "TimeoutError"):
                return []
            raise
        wanted = sorted(s for s in subjects if any(f.matches(s) for f in self._filters))
        gate = asyncio.Semaphore(_PARALLEL_GETS)

        async def last_of(subject: str) -> Message | None:
            async with gate:
                try:
                    raw = await js.get_last_msg(self._stream, subject)
                except NotFoundError:
                    return None  # removed between the listing and the read
            return Message(subject, data=raw.data, snapshot=True) if raw.data else None

        found = await asyncio.gather(*(last_of(subject) for subject in wanted))
        return [message for message in found if message is not None]


def _connect_error(url: str, exc: Exception, last_error: str) -> Exception:
    text = str(exc) or type(exc).__name__
    name = type(exc).__name__
    if "authorization" in f"{text} {last_error}".lower() or name == "AuthorizationError":
        return Unauthorized(f"NATS at {url} refused the connection: authorization failed "
                            f"(credentials in the URL, or token=)")
    if name in ("NoServersError", "TimeoutError"):
        return _unreachable(url, last_error, None)
    return NotABus(f"{url} did not answer as a NATS server ({name}: {text[:120]})")


def _unreachable(url: str, last_error: str, timeout_s: float | None) -> BusUnreachable:
    why = f" ({last_error})" if last_error else ""
    if "ConnectionRefused" in last_error:
        why = " (connection refused: is nats-server running, and is this its client port?)"
    elif not last_error and timeout_s is not None:
        why = f" within {timeout_s:g} s"
    return BusUnreachable(f"cannot connect to NATS at {url}: no server answered{why}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is nats-server running, and is this its client port?)"
    if isinstance(exc, TimeoutError):
        return "no NATS greeting in time (is this a NATS server's client port?)"
    return getattr(exc, "strerror", None) or type(exc).__name__
