"""Subscriber client for strategies: the embedded bus's websocket fan-out.

    from flowgauge import EmbeddedSubscriber, ConnectionLost

    async with EmbeddedSubscriber("ws://127.0.0.1:8765", ["flowgauge.v1.bybit.>"], token=None) as sub:
        async for topic, payload in sub:
            ...

Right after subscribing, the bus first sends the current value (latest payload) of every matching topic, then
the live stream. `async for topic, payload in sub` yields both alike; to tell them apart iterate
`sub.messages()`, which yields `BusMessage`s whose `snapshot` is True for a current value replayed on
subscribe and False for a live message.

Payloads are decoded JSON objects as documented in the README's topic reference (JSON Schemas:
`flowgauge.schema_path("payload")`, `flowgauge.schema_path("status")`).

Errors are `SubscriberError`s whose message is one line naming what is wrong:
`InvalidBusURL` (not a ws:// or wss:// URL), `BusUnreachable` (nothing listening, DNS failure, timeout),
`Unauthorized` (HTTP 401: missing or wrong token), `NotABus` (the server did not answer as the bus does),
`SubscribeRejected` (the bus refused a pattern), and `ConnectionLost`: the `async for` raises it when the
connection closes without this client asking (the daemon stopped, restarted, or disconnected a subscriber too
slow to keep up). It never ends silently; there is no automatic reconnect, so a long-lived strategy catches
`ConnectionLost` and subscribes again.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

__all__ = [
    "BusMessage",
    "BusUnreachable",
    "ConnectionLost",
    "EmbeddedSubscriber",
    "InvalidBusURL",
    "NotABus",
    "SubscribeRejected",
    "SubscriberError",
    "Unauthorized",
]


class SubscriberError(Exception):
    """Base of every error the subscriber raises; `str()` is one line naming what is wrong."""


class InvalidBusURL(SubscriberError, ValueError):
    """The URL is not a usable ws:// or wss:// URL."""


class BusUnreachable(SubscriberError, ConnectionError):
    """Nothing answered at the URL: connection refused, host not found, or the handshake timed out."""


class Unauthorized(SubscriberError):
    """The bus answered HTTP 401: the token is missing or wrong."""


class NotABus(SubscriberError):
    """Something answered, but not the flowgauge bus (an HTTP page, another websocket server, ...)."""


class SubscribeRejected(SubscriberError):
    """The bus refused a subscription (bad pattern, too many patterns)."""


class ConnectionLost(SubscriberError, ConnectionError):
    """The connection closed without this client asking (daemon stopped, slow consumer disconnected, ...)."""


@dataclass(frozen=True, slots=True)
class BusMessage:
    """One message from the bus, as `EmbeddedSubscriber.messages()` yields it."""

    topic: str
    payload: dict[str, Any]
    snapshot: bool
    """True for a topic's current value replayed on subscribe, False for a message published live."""


# The userinfo of one server (everything before its last @, scheme optional, so that a raw / ? # in a password is
# hidden whole) and the secret query parameters. The same rule as flowgauge.config.redact_url, which this layer may
# not import (a client-only install has no config loader).
_URL_USERINFO = re.compile(r"^(\s*(?:[A-Za-z][A-Za-z0-9+.-]*://)?)(.*)@", re.DOTALL)
_URL_QUERY_SECRET = re.compile(r"([?&](?:password|token)=)([^&#]*)", re.IGNORECASE)


def shown_url(url: str) -> str:
    """`url` as error messages show it: each password, lone user name (a NATS token) and `password=` / `token=`
    value replaced by `***`, so that an error a subscriber logs or prints never carries one."""

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user}:***@" if colon else f"{match.group(1)}***@"

    return ",".join(_URL_QUERY_SECRET.sub(r"\g<1>***", _URL_USERINFO.sub(hide, part)) for part in url.split(","))


def url_problem(url: str, exc: ValueError) -> str:
    """The URL parser's complaint, unless it may quote a piece of the userinfo (`... integer value as 'ab'` of
    a raw `user:ab/cd@host`): then a hint instead."""
    return "unreadable user name, password or port (percent-encode / ? # in a password)" if "@" in url else str(exc)


def check_url(url: str) -> None:
    """Raise `InvalidBusURL` unless `url` is ws:// or wss:// with a host and a valid port."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range or not a number
    except ValueError as exc:
        raise InvalidBusURL(f"invalid bus URL {shown_url(url)!r}: {url_problem(url, exc)}") from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidBusURL(f"not a websocket URL: {shown_url(url)!r} (the bus URL looks like ws://127.0.0.1:8765)")
    if not parts.hostname:
        raise InvalidBusURL(f"invalid bus URL {shown_url(url)!r}: no host")


class EmbeddedSubscriber:
    """Connects, subscribes to NATS-style patterns, yields `(topic, payload)` pairs.

    Use it as an async context manager, then iterate it. Iteration ends only when the client leaves the
    `async with` block (or calls `close()`); if the connection closes for any other reason it raises
    `ConnectionLost`. Entering raises `InvalidBusURL`, `BusUnreachable`, `Unauthorized`, `NotABus` or
    `SubscribeRejected` (all `SubscriberError`s).
    """

    def __init__(self, url: str, patterns: Sequence[str], *, token: str | None = None,
                 open_timeout_s: float = 10.0) -> None:
        self.url = url
        self._shown_url = shown_url(url)  # what messages show: the URL without its secrets
        self.patterns = list(patterns)
        self.token = token
        self.open_timeout_s = open_timeout_s
        self._ws: ClientConnection | None = None
        self._closing = False  # set once this client asked to close: only then may iteration end quietly

    async def __aenter__(self) -> EmbeddedSubscriber:
        check_url(self.url)
        self._closing = False
        self._ws = await self._connect()
        try:
            reply = await self._subscribe(self._ws)
        except BaseException:
            await self.close()
            raise
        if reply.get("op") != "subscribed":
            await self.close()
            patterns = ", ".join(self.patterns)
            raise SubscribeRejected(f"the bus at {self._shown_url} refused the subscription to {patterns}: "
                                    f"{reply.get('error', reply)}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; a running `async for` then ends without an error. Idempotent."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close()

    async def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async for message in self.messages():
            yield message.topic, message.payload

    async def messages(self) -> AsyncIterator[BusMessage]:
        """Iterate `BusMessage`s: current values first (`snapshot` True), then live ones; ends as `async for`."""
        if self._ws is None:
            raise RuntimeError("use `async with EmbeddedSubscriber(...)` before iterating")
        ws = self._ws
        try:
            async for raw in ws:
                message = orjson.loads(raw)
                if "topic" in message:
                    yield BusMessage(message["topic"], message["payload"], message.get("snapshot") is True)
        except ConnectionClosed:
            pass  # how it closed is told below, from the close frames
        if not self._closing:
            raise ConnectionLost(f"the bus at {self._shown_url} closed the connection: {_close_reason(ws)}")

    async def _connect(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            return await connect(self.url, additional_headers=headers, open_timeout=self.open_timeout_s,
                                 max_size=None)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                detail = "a token is required (--token or FLOWGAUGE_BUS__EMBEDDED__TOKEN)" if not self.token \
                    else "the token is wrong"
                raise Unauthorized(
                    f"the bus at {self._shown_url} refused the connection (HTTP 401): {detail}"
                ) from None
            raise NotABus(f"{self._shown_url} is not the flowgauge bus: it answered HTTP {status} "
                          f"instead of a websocket upgrade") from None
        except InvalidURI as exc:
            raise InvalidBusURL(f"invalid bus URL {self._shown_url!r}: {exc.msg}") from None
        except InvalidHandshake as exc:
            raise NotABus(f"{self._shown_url} is not the flowgauge bus: websocket handshake failed ({exc})") from None
        except TimeoutError:
            raise BusUnreachable(f"cannot connect to the bus at {self._shown_url}: no answer within "
                                 f"{self.open_timeout_s:g} s") from None
        except ConnectionRefusedError:
            raise BusUnreachable(f"cannot connect to the bus at {self._shown_url}: connection refused "
                                 f"(is the daemon running, and is this its bus address?)") from None
        except OSError as exc:
            tls = urlsplit(self.url).scheme == "wss"
            raise BusUnreachable(f"cannot connect to the bus at {self._shown_url}: {_describe(exc, tls)}") from None

    async def _subscribe(self, ws: ClientConnection) -> dict[str, Any]:
        """Send the subscribe request and return the bus's JSON reply."""
        try:
            await ws.send(orjson.dumps({"op": "subscribe", "patterns": self.patterns}).decode())
            async with asyncio.timeout(self.open_timeout_s):
                raw = await ws.recv()
        except TimeoutError:
            raise NotABus(f"{self._shown_url} is not the flowgauge bus: no answer to the subscribe request within "
                          f"{self.open_timeout_s:g} s") from None
        except ConnectionClosed:
            raise NotABus(f"{self._shown_url} closed the connection on the subscribe request "
                          f"({_close_reason(ws)}); is it the flowgauge bus?") from None
        try:
            reply = orjson.loads(raw)
        except orjson.JSONDecodeError:
            reply = None
        if not isinstance(reply, dict):
            raise NotABus(f"{self._shown_url} is not the flowgauge bus: it answered the subscribe request with "
                          f"{str(raw)[:60]!r}")
        return reply


def _describe(exc: OSError, tls: bool) -> str:
    """The cause of a failed connect in a few words."""
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if tls and isinstance(exc, ConnectionResetError):
        return "connection reset during the TLS handshake (the embedded bus itself serves plain ws://)"
    return exc.strerror or type(exc).__name__


def _close_reason(ws: ClientConnection) -> str:
    """'code 1001 (server shutdown)'-style text from the close frame received, or 'dropped' without one."""
    code = ws.close_code
    if code is None or code == 1006:  # 1006: no close frame arrived, the TCP connection just ended
        return "the connection dropped without a close frame"
    return f"code {code}" + (f" ({ws.close_reason})" if ws.close_reason else "")
