"""What every venue module provides: a sans-I/O per-connection parser and a static venue adapter.

Sans-I/O: nothing here (or in any venue module) imports asyncio or touches sockets. Effects are
returned, not performed: a parser that needs a REST snapshot returns `FetchSnapshot`, and the
session side performs it (rate-limited by the shared snapshot scheduler) and hands the body back
through `on_snapshot`. A plain `str` action is a text frame to send on the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

import msgspec

from flowgauge.book.sync import SequenceRule
from flowgauge.types import Event, Instrument


class FetchSnapshot(msgspec.Struct, frozen=True):
    """Ask for a REST book snapshot of `symbol`; the body goes back to `VenueParser.on_snapshot`."""

    symbol: str
    path: str  # e.g. "/fapi/v1/depth", joined to the venue's configured REST base URL
    params: dict[str, str]
    weight: int = 1  # the venue's request weight, charged against its REST budget


# A frame to send (str) or a REST snapshot to fetch.
Action = str | FetchSnapshot


class PollRequest(msgspec.Struct, frozen=True):
    """A REST endpoint polled on a schedule (open interest where no stream exists, long/short ratios)."""

    key: str  # unique per venue, e.g. "oi:BTCUSDT"
    symbol: str  # unified symbol it is about
    kind: str  # "open_interest" | "long_short"
    path: str
    params: dict[str, str]
    weight: int
    interval_s: float  # how often; the scheduler spreads requests inside the venue budget
    method: str = "GET"
    body: str | None = None  # JSON body for POST endpoints (Hyperliquid /info)


class VenueParser(Protocol):
    """One websocket connection's protocol: frames in, typed events and actions out."""

    venue: str
    instruments: dict[str, Instrument]  # this connection's instruments by venue id

    def on_connected(self) -> list[Action]:
        """Actions for a fresh connection: subscriptions, plus initial snapshot fetches where needed."""
        ...

    def resync(self, symbol: str) -> list[Action]:
        """Actions that bring one book back (re-subscribe, or fetch a REST snapshot)."""
        ...

    def ping_frame(self) -> str | None:
        """The venue's application keepalive frame, if any."""
        ...

    def feed(self, raw: str | bytes, ts_recv: int) -> list[Event | str]:
        """Parse one frame. Never raises on bad input (returns BadFrame). A str is a frame to send back
        (e.g. answering a venue heartbeat request)."""
        ...

    def on_snapshot(self, symbol: str, body: str | bytes, ts_recv: int) -> list[Event]:
        """Parse a REST snapshot requested with FetchSnapshot."""
        ...

    def reset(self) -> None:
        """Forget per-connection state (merged tickers, pending snapshots) before a reconnect."""
        ...


class VenueAdapter(Protocol):
    """Static facts and factories of one venue (ccxt id)."""

    venue: ClassVar[str]
    default_ws_url: ClassVar[str]
    default_rest_url: ClassVar[str]
    # REST weight we allow ourselves per minute across all requests (snapshots + polls): a share of the
    # venue's published limit, leaving room for other clients on the same IP.
    rest_weight_per_minute: ClassVar[int]
    sequence_rule: ClassVar[SequenceRule]
    # True when books start from a REST snapshot and deltas must be buffered until it arrives.
    buffer_deltas: ClassVar[bool]

    def connections(
        self, instruments: Sequence[Instrument], ws_url: str, book_depth: int
    ) -> list[tuple[str, VenueParser]]:
        """Split instruments over websocket connections: (url, parser) pairs, within the venue's limits."""
        ...

    def polls(self, instruments: Sequence[Instrument]) -> list[PollRequest]:
        """REST polls this venue needs (open interest without a stream, long/short ratios)."""
        ...

    def parse_poll(self, request: PollRequest, body: str | bytes, ts_recv: int) -> list[Event]:
        """Events from one poll answer. Never raises on bad input (returns BadFrame)."""
        ...
