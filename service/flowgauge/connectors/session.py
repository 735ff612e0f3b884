"""The one websocket session runner shared by every venue: the only code that touches venue sockets.

It connects, sends what the sans-I/O handler asks for (subscriptions in batches, resyncs),
keeps the connection alive (protocol pings plus the venue's application ping), reconnects with
exponential backoff, jitter and a cap, and treats a feed silent for `stale_after_s` as dead.
Parsing, books and metrics happen inline in `handler.on_frame`, so frames are processed in
arrival order with no queue in between; the socket's own bounded buffer (`max_queue`) pauses
TCP reads if processing ever falls behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode

from flowgauge.connectors.arrivals import ArrivalStampedConnection
from flowgauge.connectors.failures import FailureReporter, cause_class, describe
from flowgauge.logs import event

log = logging.getLogger(__name__)


class FeedHandler(Protocol):
    """What a session drives. Implementations are synchronous and never block."""

    venue: str

    def on_connected(self) -> list[str]:
        """Frames to send on a fresh connection (subscriptions)."""
        ...

    def on_frame(self, raw: str | bytes, ts_recv: int) -> list[str]:
        """Process one received frame; return frames to send (e.g. resync requests)."""
        ...

    def on_idle(self, now_ns: int) -> list[str]:
        """Called about once a second; frames that became due (deferred resyncs)."""
        ...

    def on_disconnected(self, reason: str) -> None:
        """The connection is gone: every book it carried is now unknown."""
        ...

    def ping_frame(self) -> str | None:
        """The venue's application-level keepalive frame, if it has one."""
        ...


class SessionHooks(Protocol):
    def connected(self, venue: str, up: bool) -> None: ...
    def received(self, venue: str, nbytes: int) -> None: ...
    def reconnect(self, venue: str, reason: str) -> None: ...


class FrameRecorder(Protocol):
    def connect(self, conn: str, addr: str) -> None: ...
    def send(self, conn: str, addr: str, data: str) -> None: ...
    def recv(self, conn: str, data: str, ts: float | None = None) -> None: ...


@dataclass(frozen=True, kw_only=True)
class SessionSettings:
    ping_interval_s: float = 20.0
    stale_after_s: float = 30.0
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    # A connection that lived at least this long resets the backoff; one that died younger keeps
    # growing it, so a venue that accepts and then drops us is not hammered.
    healthy_after_s: float = 30.0
    max_frame_bytes: int = 16 * 1024 * 1024
    max_queue_frames: int = 4096
    # Venues that cut every connection at a fixed age (Binance: 24 h) get a reconnect of our own a little
    # before, at a moment we choose, instead of a drop mid-stream. None: no scheduled reconnect.
    max_connection_age_s: float | None = None


class HandlerFailed(Exception):
    """Processing a frame raised: the books on this connection can no longer be trusted, so the connection
    is dropped and rebuilt (books invalidated, fresh snapshots) instead of the daemon dying."""


class ScheduledReconnect(Exception):
    """The connection reached `max_connection_age_s`: close it cleanly and reconnect at once."""


def backoff_delays(initial_s: float, max_s: float, rng: random.Random) -> Iterator[float]:
    """Exponential backoff with "equal jitter": each delay is uniform in [d/2, d], d doubling to max_s."""
    delay = initial_s
    while True:
        yield rng.uniform(delay / 2.0, delay)
        delay = min(max_s, delay * 2.0)


def classify(exc: BaseException) -> str:
    """Reason label for a dropped connection (the `reason` of the reconnect counter)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionClosed):
        # 1012 is the venue announcing a restart (planned maintenance), worth telling apart from drops.
        if exc.rcvd is not None and exc.rcvd.code == CloseCode.SERVICE_RESTART:
            return "server_restart"
        return "closed"
    if isinstance(exc, InvalidStatus):
        return "rejected"
    return "error"


class Session:
    """Keeps one websocket to `url` alive for `handler` until cancelled.

    Args:
        url: the venue websocket URL (from configuration: production or the simulator).
        handler: the sans-I/O side (parser + engine) for this connection.
        settings: timing and limits.
        hooks: telemetry callbacks, optional.
        recorder: raw-frame recorder, optional.
        name: connection id used in logs and recordings.
    """

    def __init__(
        self,
        url: str,
        handler: FeedHandler,
        settings: SessionSettings,
        *,
        hooks: SessionHooks | None = None,
        recorder: FrameRecorder | None = None,
        name: str = "ws",
        rng: random.Random | None = None,
        failures: FailureReporter | None = None,
    ) -> None:
        self.url = url
        self.handler = handler
        self.settings = settings
        self.hooks = hooks
        self.recorder = recorder
        self.name = name
        self.failures = failures
        self._rng = rng or random.Random()
        self.connects = 0
        self.connected = asyncio.Event()
        # monotonic time the current connection opened; None until a handshake succeeds.
        self._opened_at: float | None = None
        # Frames received on the current connection: the stale-feed watchdog only compares this counter
        # between its checks, so the per-frame cost of the watchdog is one increment.
        self._frames_seen = 0

    async def run(self) -> None:
        """Connect, stream, reconnect; returns only by cancellation."""
        settings = self.settings
        delays = backoff_delays(settings.backoff_initial_s, settings.backoff_max_s, self._rng)
        venue = self.handler.venue
        while True:
            self._opened_at = None
            reason = "closed"
            try:
                await self._connect_and_stream()
            except InvalidURI:
                raise  # configuration error: retrying cannot help
            except ScheduledReconnect:
                reason = "scheduled"
                event(log, logging.INFO, "ws_scheduled_reconnect", venue=venue, conn=self.name)
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, HandlerFailed) as exc:
                reason = classify(exc)
                cause = cause_class(exc)
                message = describe(exc, 200)
                event(log, logging.WARNING, "ws_disconnected", venue=venue, conn=self.name, reason=reason,
                      cause=cause, error=message)
                if self.failures is not None:
                    # The books this connection carries (Binance's trade connection carries none).
                    books = getattr(self.handler, "book_symbols", ())
                    self.failures.venue_failure(venue, "ws", cause, f"{self.url}: {message}", books)
            finally:
                self.connected.clear()
                if self.hooks is not None:
                    self.hooks.connected(venue, False)
            self.handler.on_disconnected(reason)
            if self.hooks is not None:
                self.hooks.reconnect(venue, reason)
            # Lifetime counts from the completed handshake, not from the attempt: an attempt that spent
            # connect_timeout_s waiting for a handshake that never came must not pass for a healthy
            # connection and reset the backoff (that would retry a hanging venue at the initial delay forever).
            opened_at = self._opened_at
            if opened_at is not None and time.monotonic() - opened_at >= settings.healthy_after_s:
                delays = backoff_delays(settings.backoff_initial_s, settings.backoff_max_s, self._rng)
            # A scheduled reconnect is ours, not a failure: no backoff.
            delay = 0.0 if reason == "scheduled" else next(delays)
            event(log, logging.INFO, "ws_reconnect_scheduled", venue=venue, conn=self.name, delay_s=round(delay, 3))
            await asyncio.sleep(delay)

    async def _connect_and_stream(self) -> None:
        settings = self.settings
        async with connect(
            self.url,
            open_timeout=settings.connect_timeout_s,
            ping_interval=settings.ping_interval_s,
            ping_timeout=settings.ping_interval_s,
            close_timeout=1.0,  # part of the shutdown budget: a venue that does not answer a close is cut
            max_size=settings.max_frame_bytes,
            max_queue=settings.max_queue_frames,
            compression=None,
            create_connection=ArrivalStampedConnection,  # honest receive times (see connectors.arrivals)
        ) as ws:
            self._opened_at = time.monotonic()
            try:
                await self._serve(ws)
            except asyncio.CancelledError:
                # Shutdown, not failure: say "going away" (1001). Leaving the `async with` on an exception
                # closes with 1011 internal error, which a venue logs as our crash. Bounded by close_timeout;
                # the cancellation is re-raised.
                await ws.close(CloseCode.GOING_AWAY)
                raise

    async def _serve(self, ws: ClientConnection) -> None:
        """Subscribe, then stream and keep alive until either fails."""
        self.connects += 1
        conn = f"{self.name}.{self.connects}"
        event(log, logging.INFO, "ws_connected", venue=self.handler.venue, conn=conn, url=self.url)
        if self.recorder is not None:
            self.recorder.connect(conn, self.url)
        if self.hooks is not None:
            self.hooks.connected(self.handler.venue, True)
        await self._send_all(ws, conn, self.handler.on_connected())
        self.connected.set()
        # Stream and keepalive are peers and whichever fails first ends the connection: the stream with a
        # drop or the watchdog's timeout, the keepalive with a bug in the handler. Awaiting only the stream
        # would let a failing keepalive stop the pings silently (and its exception never be retrieved)
        # while the stream went on until the venue dropped us. Owned here rather than by a TaskGroup,
        # which would wrap the stream's exception in a group: cancelled and awaited however we leave.
        self._frames_seen = 0
        tasks = (
            asyncio.create_task(self._stream(ws, conn), name=f"stream:{conn}"),
            asyncio.create_task(self._keepalive(ws, conn), name=f"keepalive:{conn}"),
            asyncio.create_task(self._watchdog(), name=f"watchdog:{conn}"),
        )
        try:
            done, _ = await asyncio.wait(
                tasks, timeout=self.settings.max_connection_age_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            await self._stop(tasks)
        if not done:
            await ws.close()  # normal closure (1000), then reconnect without backoff
            raise ScheduledReconnect(f"{conn} reached {self.settings.max_connection_age_s} s")
        # No loop returns normally: re-raise the first failure (the stream's if several failed).
        for task in tasks:
            if task in done:
                task.result()

    @staticmethod
    async def _stop(tasks: tuple[asyncio.Task[None], ...]) -> None:
        """Cancel and await `tasks`; wait() does not re-raise the children's errors, so ours is never lost."""
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: the caller re-raises the one that matters

    async def _stream(self, ws: ClientConnection, conn: str) -> None:
        handler = self.handler
        hooks = self.hooks
        recorder = self.recorder
        venue = handler.venue
        recv = ws.recv
        # The receive time is when the bytes arrived, not when recv() handed the message out: the difference
        # is time spent queued behind other messages, which backlog conflation and the latency metrics need.
        arrival_ns = getattr(ws, "arrival_ns", time.time_ns)
        # on_idle is driven by the keepalive task alone (every second), and staleness by the watchdog task,
        # not from this per-frame loop: a timer armed per message cost ~6% of the live path.
        while True:
            raw = await recv()
            ts_recv = arrival_ns()
            self._frames_seen += 1
            if hooks is not None:
                hooks.received(venue, len(raw))
            if recorder is not None:
                # Recorded with the receive time the pipeline gets, so a replay sees the same clock (to float
                # precision): frames that arrived together keep one timestamp, as they had live.
                recorder.recv(conn, raw if isinstance(raw, str) else raw.decode("utf-8", "replace"), ts_recv / 1e9)
            try:
                to_send = handler.on_frame(raw, ts_recv)
            except Exception as exc:
                # A bug or an input nobody anticipated: never let it kill the daemon. Log with the
                # traceback (a state change, not per message: the connection is rebuilt) and reconnect.
                log.exception("frame_processing_failed", extra={"fields": {"venue": venue, "conn": conn}})
                raise HandlerFailed(repr(exc)[:200]) from exc
            if to_send:
                await self._send_all(ws, conn, to_send)

    async def _watchdog(self) -> None:
        """Raise TimeoutError once no frame has arrived for `stale_after_s`: a feed silent this long is dead
        even if TCP still looks open.

        Checks a few times per deadline instead of re-arming a timer per frame. The silence is counted from
        the first check that saw no new frame since the one before (or from the connection's start), so a
        feed is never dropped early, and at most a quarter of `stale_after_s` late.
        """
        stale_after = self.settings.stale_after_s
        period = stale_after / 4.0
        clock = time.monotonic
        seen = self._frames_seen
        quiet_since = clock()
        while True:
            await asyncio.sleep(max(0.0, min(period, quiet_since + stale_after - clock())))
            now = clock()
            if self._frames_seen != seen:
                seen = self._frames_seen
                quiet_since = now
            elif now - quiet_since >= stale_after:
                raise TimeoutError(f"no frame for {stale_after} s")

    async def _keepalive(self, ws: ClientConnection, conn: str) -> None:
        # Ticks at least once a second so deferred resyncs go out even on a quiet feed; the venue's
        # application ping goes out every ping_interval_s.
        interval = self.settings.ping_interval_s
        tick = min(1.0, interval)
        next_ping = time.monotonic() + interval
        while True:
            await asyncio.sleep(tick)
            try:
                frames = self.handler.on_idle(time.time_ns())
            except Exception as exc:
                log.exception("idle_processing_failed", extra={"fields": {"venue": self.handler.venue}})
                raise HandlerFailed(repr(exc)[:200]) from exc
            if time.monotonic() >= next_ping:
                next_ping = time.monotonic() + interval
                ping = self.handler.ping_frame()
                if ping is not None:
                    frames = [*frames, ping]
            if frames:
                with contextlib.suppress(ConnectionClosed):
                    await self._send_all(ws, conn, frames)

    async def _send_all(self, ws: ClientConnection, conn: str, frames: list[str]) -> None:
        for frame in frames:
            if self.recorder is not None:
                self.recorder.send(conn, self.url, frame)
            await ws.send(frame)
