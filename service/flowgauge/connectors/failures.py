"""Why talking to a venue failed: one small vocabulary of cause classes for every venue I/O path.

Markets loading (ccxt), REST snapshots and polls (aiohttp) and websocket connects (websockets) fail with
different exception types, often wrapped: ccxt raises `ExchangeNotAvailable` from aiohttp's
`ClientConnectorDNSError` from an `OSError`. `cause_class` walks the whole chain (`__cause__`, then
`__context__`) and names the most telling cause found in it:

    dns        the host name did not resolve (NXDOMAIN, no resolver reachable)
    connect    no TCP connection: refused, reset, unreachable, any other socket error
    tls        the TLS handshake failed (not TLS on the other end, bad certificate)
    http_<code> the server answered with an HTTP error status (a geo-block is typically 403 or 451);
               codes outside `HTTP_CODES` are folded into http_4xx / http_5xx so the class stays a
               bounded vocabulary (it is a Prometheus label value); the message keeps the exact code
    timeout    no answer within the deadline (connect, handshake, request, or a silent stream)
    closed     an open connection was closed or lost by the peer
    protocol   the venue answered, but not in the protocol expected (no websocket upgrade, a malformed
               HTTP response or body)
    other      anything else (a bug in our handler, an unexpected library error)

Pure: no I/O and no state; the exception types come from the libraries the connectors already use.
"""

from __future__ import annotations

import socket
import ssl
import sys
from collections.abc import Iterator, Sequence
from typing import Protocol

import aiohttp
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

__all__ = [
    "CAUSE_CLASSES",
    "FIXED_CAUSES",
    "HTTP_CODES",
    "FailureReporter",
    "HttpStatusError",
    "cause_class",
    "describe",
    "http_cause",
]

# HTTP statuses that keep their own class: the ones a venue answers with a meaning worth telling apart.
HTTP_CODES: tuple[int, ...] = (400, 401, 403, 404, 405, 408, 410, 418, 429, 451, 500, 502, 503, 504)
FIXED_CAUSES: tuple[str, ...] = ("dns", "connect", "tls", "timeout", "closed", "protocol", "other")
# Every value cause_class can return.
CAUSE_CLASSES: tuple[str, ...] = (
    *FIXED_CAUSES,
    *(f"http_{code}" for code in HTTP_CODES),
    "http_4xx",
    "http_5xx",
)

# When a chain holds several recognisable causes, the most specific wins: an HTTP status or a TLS failure
# says more than the connection error wrapping it; a drop mid-stream is "closed" even if a reset lies below.
_PRECEDENCE = ("http", "tls", "dns", "timeout", "closed", "connect", "protocol", "other")
_MAX_CHAIN = 16


class HttpStatusError(Exception):
    """A venue answered with an HTTP error status (raised where a library would hide the status)."""

    def __init__(self, status: int, reason: str = "", url: str = "", retry_after_s: float | None = None) -> None:
        self.status = status
        self.reason = reason
        self.url = url
        self.retry_after_s = retry_after_s  # a 429/418: how long the venue asked us to wait (Retry-After)
        super().__init__(f"HTTP {status} {reason}".rstrip() + (f" from {url}" if url else ""))


def http_cause(status: int) -> str:
    """The cause class of an HTTP error status (>= 400); http_4xx / http_5xx outside `HTTP_CODES`."""
    if status in HTTP_CODES:
        return f"http_{status}"
    if 400 <= status < 500:
        return "http_4xx"
    if 500 <= status < 600:
        return "http_5xx"
    return "protocol"  # not an error status: the answer was not what the protocol expects


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _ccxt_class(exc: BaseException) -> str | None:
    # ccxt is heavy and only imported by the live daemon's markets loading: if it is not loaded,
    # the exception cannot be one of its types.
    errors = sys.modules.get("ccxt.base.errors")
    if errors is None:
        return None
    if isinstance(exc, errors.RequestTimeout):
        return "timeout"
    if isinstance(exc, errors.BadResponse | errors.NullResponse):
        return "protocol"
    return None


def _one(exc: BaseException) -> str | None:
    """The class of one exception on its own, or None when it only wraps something else."""
    if isinstance(exc, HttpStatusError):
        return http_cause(exc.status)
    if isinstance(exc, aiohttp.ClientResponseError):
        return http_cause(exc.status)
    if isinstance(exc, InvalidStatus):
        return http_cause(exc.response.status_code)
    if isinstance(exc, ssl.SSLError | ssl.CertificateError | aiohttp.ClientSSLError):
        return "tls"
    # Before the OSError checks: both are OSError subclasses.
    if isinstance(exc, socket.gaierror | socket.herror | aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionClosed | aiohttp.ServerDisconnectedError):
        return "closed"
    if isinstance(exc, OSError | aiohttp.ClientConnectionError):
        return "connect"
    if isinstance(exc, InvalidHandshake | aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return "protocol"
    return _ccxt_class(exc)


def cause_class(exc: BaseException) -> str:
    """The cause class (one of `CAUSE_CLASSES`) of a failed venue request or connection."""
    found = {_one(link) for link in _chain(exc)}
    for family in _PRECEDENCE:
        for cause in found:
            if cause is not None and cause.split("_")[0] == family:
                return cause
    return "other"


def describe(exc: BaseException, limit: int = 300) -> str:
    """One line naming the exception and its innermost cause, for logs and /status."""
    # The innermost link that says something (asyncio timeouts end in a bare CancelledError).
    links: list[BaseException] = [link for link in _chain(exc) if str(link) and isinstance(link, Exception)] or [exc]
    text = f"{type(exc).__name__}: {exc}"
    innermost = links[-1]
    if innermost is not exc and str(innermost) not in text:
        text += f" (cause: {type(innermost).__name__}: {innermost})"
    return " ".join(text.split())[:limit]


class FailureReporter(Protocol):
    """Where connectors report a venue failure: `where` is the path (markets, ws, rest:<kind>), `symbols` the
    books it leaves without data (empty when no book depends on it, e.g. a failed poll)."""

    def venue_failure(self, venue: str, where: str, cause: str, message: str, symbols: Sequence[str]) -> None: ...
