"""The shared websocket Session runner (flowgauge.connectors.session) against real loopback servers.

Every test starts its own `websockets.asyncio.server.serve` on 127.0.0.1 port 0 (the `FakeVenue` below) and
drives a `Session` with a tiny scripted `FeedHandler`. The server side is scripted from the test body: each
accepted connection is handed to the test as a `ServerConn` with the frames the client sent and an event set
when the client's close arrives. Synchronisation is by queues and events under `asyncio.wait_for`; time only
enters through the session's own small timings (stale watchdog, pings, backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from flowgauge.connectors.session import Session, SessionSettings

pytestmark = pytest.mark.integration

FACTOR = float(os.environ.get("FLOWGAUGE_TESTS_TIMEOUT_FACTOR", "1"))
WAIT = 3.0 * FACTOR  # upper bound for any single wait; tests normally finish each step in milliseconds
SUBSCRIBE = ["sub:1", "sub:2", "sub:3"]
PING = '{"op":"ping"}'

# Fast defaults: reconnects after ~10 ms, nothing else fires unless a test asks for it.
FAST = SessionSettings(
    ping_interval_s=30.0,
    stale_after_s=30.0,
    connect_timeout_s=2.0 * FACTOR,
    backoff_initial_s=0.01,
    backoff_max_s=0.08,
    healthy_after_s=60.0,
)


# --- the server side ----------------------------------------------------------------------------------------


@dataclass(eq=False)
class ServerConn:
    """One connection as the fake venue saw it."""

    n: int
    ws: ServerConnection
    received: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None

    async def expect(self, count: int) -> list[str]:
        """The next `count` frames the client sent on this connection."""
        return [await asyncio.wait_for(self.received.get(), WAIT) for _ in range(count)]

    async def wait_closed(self) -> int | None:
        await asyncio.wait_for(self.closed.wait(), WAIT)
        return self.close_code


class FakeVenue:
    """A websocket server whose connections the test scripts; counts handshakes, accepts and rejections."""

    def __init__(self, process_request: Callable[[ServerConnection, Request], Awaitable[Response | None]] | None):
        self._process_request = process_request
        self.server: Server | None = None
        self.accepted: asyncio.Queue[ServerConn] = asyncio.Queue(maxsize=1000)
        self.connections = 0
        self.handshakes = 0
        self.handshake_seen: asyncio.Queue[int] = asyncio.Queue(maxsize=1000)
        self.url = ""

    async def next_conn(self) -> ServerConn:
        return await asyncio.wait_for(self.accepted.get(), WAIT)

    async def _on_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        self.handshake_seen.put_nowait(self.handshakes)
        if self._process_request is None:
            return None
        return await self._process_request(ws, request)

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        conn = ServerConn(self.connections, ws)
        self.accepted.put_nowait(conn)
        # Read until the client goes away; the test sends and closes through conn.ws meanwhile.
        try:
            async for message in ws:
                conn.received.put_nowait(message if isinstance(message, str) else message.decode())
        except ConnectionClosed:
            pass
        finally:
            rcvd = ws.protocol.close_rcvd
            conn.close_code = rcvd.code if rcvd is not None else None
            conn.closed.set()


@contextlib.asynccontextmanager
async def fake_venue(
    process_request: Callable[[ServerConnection, Request], Awaitable[Response | None]] | None = None,
) -> AsyncIterator[FakeVenue]:
    venue = FakeVenue(process_request)
    async with serve(venue._handler, "127.0.0.1", 0, process_request=venue._on_request, compression=None) as srv:
        venue.server = srv
        host, port = next(iter(srv.sockets)).getsockname()[:2]
        venue.url = f"ws://{host}:{port}/v5/public/linear"
        yield venue


# --- the client side: a scripted FeedHandler, hooks, recorder and a spying rng ------------------------------


class ScriptedFeed:
    """A FeedHandler that records every call; `replies` maps a received frame to frames to send back."""

    venue = "testvenue"

    def __init__(self, *, ping: str | None = PING, replies: dict[str, list[str]] | None = None) -> None:
        self.ping = ping
        self.replies = replies or {}
        self.frames: asyncio.Queue[tuple[str, int]] = asyncio.Queue(maxsize=1000)
        self.disconnects: list[str] = []
        self.disconnected: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)
        self.connected_calls = 0
        self.idle_calls = 0
        self.idle = asyncio.Event()

    def on_connected(self) -> list[str]:
        self.connected_calls += 1
        return list(SUBSCRIBE)

    def on_frame(self, raw: str | bytes, ts_recv: int) -> list[str]:
        text = raw if isinstance(raw, str) else raw.decode()
        self.frames.put_nowait((text, ts_recv))
        return list(self.replies.get(text, []))

    def on_idle(self, now_ns: int) -> list[str]:
        self.idle_calls += 1
        self.idle.set()
        return []

    def on_disconnected(self, reason: str) -> None:
        self.disconnects.append(reason)
        self.disconnected.put_nowait(reason)

    def ping_frame(self) -> str | None:
        return self.ping

    async def next_frame(self) -> tuple[str, int]:
        return await asyncio.wait_for(self.frames.get(), WAIT)

    async def next_disconnect(self) -> str:
        return await asyncio.wait_for(self.disconnected.get(), WAIT)


class Hooks:
    def __init__(self) -> None:
        self.up: list[bool] = []
        self.received_bytes = 0
        self.reconnects: list[str] = []

    def connected(self, venue: str, up: bool) -> None:
        assert venue == ScriptedFeed.venue
        self.up.append(up)

    def received(self, venue: str, nbytes: int) -> None:
        self.received_bytes += nbytes

    def reconnect(self, venue: str, reason: str) -> None:
        self.reconnects.append(reason)


class Recorder:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, str]] = []

    def connect(self, conn: str, addr: str) -> None:
        self.log.append(("connect", conn, addr))

    def send(self, conn: str, addr: str, data: str) -> None:
        self.log.append(("send", conn, data))

    def recv(self, conn: str, data: str, ts: float | None = None) -> None:
        self.log.append(("recv", conn, data))


class SpyRandom(random.Random):
    """A seeded Random that remembers the nominal backoff delay (upper bound) of every draw."""

    def __init__(self, seed: int = 1) -> None:
        super().__init__(seed)
        self.nominal: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.nominal.append(b)
        return super().uniform(a, b)


@contextlib.asynccontextmanager
async def running(session: Session) -> AsyncIterator[asyncio.Task[None]]:
    """Run `session` in a task owned by this block: cancelled and awaited on exit, never left behind."""
    task = asyncio.create_task(session.run(), name="session-under-test")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)


def _session(venue: FakeVenue, feed: ScriptedFeed, settings: SessionSettings = FAST, **kwargs: object) -> Session:
    return Session(venue.url, feed, settings, name="TEST.ws", **kwargs)  # type: ignore[arg-type]


# --- 1. connect, subscribe, stream ------------------------------------------------------------------------


async def test_subscribes_in_order_then_delivers_frames_in_order_with_increasing_ts_recv() -> None:
    # Timeline: client connects -> sends sub:1, sub:2, sub:3 (on_connected) -> server sends f0..f9 ->
    # on_frame sees f0..f9 in that order, none with an earlier ts_recv than the one before (ts_recv is when the
    # bytes arrived: frames read in one chunk share it).
    feed, hooks, recorder = ScriptedFeed(), Hooks(), Recorder()
    async with fake_venue() as venue:
        session = _session(venue, feed, hooks=hooks, recorder=recorder)
        async with running(session):
            conn = await venue.next_conn()
            assert await conn.expect(len(SUBSCRIBE)) == SUBSCRIBE
            await asyncio.wait_for(session.connected.wait(), WAIT)

            sent = [f'{{"topic":"t","seq":{i}}}' for i in range(10)]
            for frame in sent:
                await conn.ws.send(frame)
            got = [await feed.next_frame() for _ in sent]

            assert [text for text, _ in got] == sent
            stamps = [ts for _, ts in got]
            assert all(later >= earlier for earlier, later in itertools.pairwise(stamps)), stamps
            assert hooks.up == [True]
            assert hooks.received_bytes == sum(len(f) for f in sent)
            assert venue.connections == 1 and session.connects == 1
            assert feed.disconnects == []
            # The recorder saw the connection, the subscriptions and every frame, in order.
            conn_id = recorder.log[0][1]
            assert recorder.log == [
                ("connect", conn_id, venue.url),
                *(("send", conn_id, s) for s in SUBSCRIBE),
                *(("recv", conn_id, f) for f in sent),
            ]


# --- 2. stale-feed watchdog -------------------------------------------------------------------------------


async def test_silent_feed_is_dropped_after_stale_after_s_and_resubscribed() -> None:
    # Timeline: connect + subscribe -> server says nothing -> after stale_after_s (0.3 s) the session gives up
    # on the connection (server sees the close) -> on_disconnected("timeout") -> reconnect -> subscriptions
    # are sent again on connection 2.
    stale = 0.3
    feed, hooks = ScriptedFeed(), Hooks()
    settings = replace(FAST, stale_after_s=stale)
    loop = asyncio.get_running_loop()
    async with fake_venue() as venue, running(_session(venue, feed, settings, hooks=hooks)):
        first = await venue.next_conn()
        assert await first.expect(len(SUBSCRIBE)) == SUBSCRIBE
        subscribed_at = loop.time()

        assert await feed.next_disconnect() == "timeout"
        silent_for = loop.time() - subscribed_at
        await first.wait_closed()

        second = await venue.next_conn()
        assert await second.expect(len(SUBSCRIBE)) == SUBSCRIBE

        assert silent_for >= stale * 0.9, silent_for  # not dropped before the deadline
        assert venue.connections == 2
        assert hooks.reconnects == ["timeout"]
        assert feed.connected_calls == 2


async def test_a_feed_that_keeps_talking_is_not_considered_stale() -> None:
    # Timeline: stale_after_s = 0.5, ping every 0.15 s, and the server answers every ping with a pong frame
    # (as Bybit does) -> frames arrive well inside the deadline, so the watchdog is re-armed each time and
    # the one connection outlives 8 pings (~1.2 s, well past stale_after_s).
    feed = ScriptedFeed()
    settings = replace(FAST, stale_after_s=0.5, ping_interval_s=0.15)
    async with fake_venue() as venue, running(_session(venue, feed, settings)):
        conn = await venue.next_conn()
        await conn.expect(len(SUBSCRIBE))
        for _ in range(8):
            assert await conn.expect(1) == [PING]
            await conn.ws.send('{"op":"pong"}')

        assert feed.disconnects == []
        assert venue.connections == 1
        assert feed.frames.qsize() >= 7


async def test_a_feed_that_talks_then_goes_silent_is_dropped_stale_after_s_after_its_last_frame() -> None:
    # Timeline: stale_after_s = 0.4; the server sends a frame every 0.1 s for ~0.6 s (past one deadline),
    # then nothing -> the watchdog counts the silence from the last frame: the drop ("timeout") comes no
    # earlier than stale_after_s after it and within a bound, and the session reconnects.
    stale = 0.4
    feed = ScriptedFeed()
    settings = replace(FAST, stale_after_s=stale)
    loop = asyncio.get_running_loop()
    async with fake_venue() as venue, running(_session(venue, feed, settings)):
        conn = await venue.next_conn()
        await conn.expect(len(SUBSCRIBE))
        for n in range(6):
            await conn.ws.send(f"tick:{n}")
            await feed.next_frame()
            await asyncio.sleep(0.1)  # the feed's own pace, not synchronisation: the session must stay up
        last_frame_at = loop.time() - 0.1
        assert feed.disconnects == []

        assert await feed.next_disconnect() == "timeout"
        silent_for = loop.time() - last_frame_at

        assert silent_for >= stale * 0.9, silent_for
        assert silent_for <= stale * 1.25 + 0.5 * FACTOR, silent_for
        assert (await venue.next_conn()).n == 2


# --- 3. the server closes the connection ------------------------------------------------------------------


async def _abort(ws: ServerConnection) -> None:
    ws.transport.abort()  # TCP reset, no close frame: the client sees 1006


def _close_with(code: int) -> Callable[[ServerConnection], Awaitable[None]]:
    async def close(ws: ServerConnection) -> None:
        await ws.close(code, "bye")

    return close


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        (CloseCode.NORMAL_CLOSURE, "closed"),
        (CloseCode.GOING_AWAY, "closed"),
        (CloseCode.INTERNAL_ERROR, "closed"),
        (CloseCode.TRY_AGAIN_LATER, "closed"),
        (CloseCode.SERVICE_RESTART, "server_restart"),
        ("abort", "closed"),
    ],
    ids=lambda value: value if isinstance(value, str) else getattr(value, "name", str(value)),
)
async def test_server_close_reconnects_with_growing_backoff_and_resubscribes(how: int | str, reason: str) -> None:
    # Timeline: conn 1 subscribes -> server closes it (code `how` or a TCP abort) -> on_disconnected(reason)
    # -> backoff -> conn 2 subscribes -> server closes it again -> conn 3 subscribes. Exactly one
    # on_disconnected per drop, and since every connection died young the nominal delay keeps doubling.
    feed, hooks, rng = ScriptedFeed(), Hooks(), SpyRandom()
    closer = _abort if how == "abort" else _close_with(int(how))
    async with fake_venue() as venue, running(_session(venue, feed, hooks=hooks, rng=rng)):
        for drop in range(2):
            conn = await venue.next_conn()
            assert await conn.expect(len(SUBSCRIBE)) == SUBSCRIBE
            await closer(conn.ws)
            assert await feed.next_disconnect() == reason
            assert feed.disconnects == [reason] * (drop + 1)

        third = await venue.next_conn()
        assert await third.expect(len(SUBSCRIBE)) == SUBSCRIBE

        assert feed.disconnects == [reason, reason]  # once per drop, not once per attempt or per task
        assert hooks.reconnects == [reason, reason]
        assert rng.nominal == [0.01, 0.02]
        assert hooks.up == [True, False, True, False, True]
        assert venue.connections == 3


# --- 4. application keepalive -----------------------------------------------------------------------------


async def test_application_ping_is_sent_periodically_and_on_idle_is_called() -> None:
    # Timeline: connect + subscribe -> every ping_interval_s (0.2 s) the keepalive sends the venue's ping
    # frame -> the server sees at least three of them on the same connection -> on_idle was called too.
    feed = ScriptedFeed()
    settings = replace(FAST, ping_interval_s=0.2)
    loop = asyncio.get_running_loop()
    async with fake_venue() as venue, running(_session(venue, feed, settings)):
        conn = await venue.next_conn()
        assert await conn.expect(len(SUBSCRIBE)) == SUBSCRIBE
        start = loop.time()
        pings = await conn.expect(3)
        elapsed = loop.time() - start

        assert pings == [PING] * 3
        assert elapsed >= 0.2 * 3 * 0.8, elapsed  # periodic, not a burst
        await asyncio.wait_for(feed.idle.wait(), WAIT)
        assert feed.idle_calls >= 1
        assert venue.connections == 1 and feed.disconnects == []


async def test_venue_without_application_ping_sends_nothing_but_still_gets_idle_calls() -> None:
    # Timeline: connect + subscribe -> keepalive ticks -> on_idle called, yet no frame beyond the
    # subscriptions reaches the server (protocol pings are not messages).
    feed = ScriptedFeed(ping=None)
    settings = replace(FAST, ping_interval_s=0.1)
    async with fake_venue() as venue, running(_session(venue, feed, settings)):
        conn = await venue.next_conn()
        assert await conn.expect(len(SUBSCRIBE)) == SUBSCRIBE
        for _ in range(2):  # two keepalive ticks
            feed.idle.clear()
            await asyncio.wait_for(feed.idle.wait(), WAIT)
        assert conn.received.empty()


# --- 5. frames returned by on_frame -----------------------------------------------------------------------


async def test_frames_returned_by_on_frame_go_back_on_the_same_connection() -> None:
    # Timeline: connect + subscribe -> server sends a frame that makes the handler ask for a resync ->
    # the resync request arrives on that same connection, in order, before the next reply.
    feed = ScriptedFeed(replies={"gap:BTC": ['{"op":"resync","arg":"BTC"}'], "gap:ETH": ["r:ETH1", "r:ETH2"]})
    async with fake_venue() as venue, running(_session(venue, feed)):
        conn = await venue.next_conn()
        assert await conn.expect(len(SUBSCRIBE)) == SUBSCRIBE

        await conn.ws.send("gap:BTC")
        assert await conn.expect(1) == ['{"op":"resync","arg":"BTC"}']
        await conn.ws.send("quiet")
        await conn.ws.send("gap:ETH")
        assert await conn.expect(2) == ["r:ETH1", "r:ETH2"]

        assert [(await feed.next_frame())[0] for _ in range(3)] == ["gap:BTC", "quiet", "gap:ETH"]
        assert venue.connections == 1


# --- 6. cancellation --------------------------------------------------------------------------------------


async def test_cancelling_a_streaming_session_closes_the_socket_promptly_and_propagates() -> None:
    # Timeline: connect + subscribe + one frame -> the owner cancels run() -> the client closes the socket
    # with 1001 going away (a clean shutdown, not an error) -> the server sees it -> run() ends with
    # CancelledError well within a second; no reconnect is counted.
    feed, hooks = ScriptedFeed(), Hooks()
    loop = asyncio.get_running_loop()
    async with fake_venue() as venue:
        session = _session(venue, feed, hooks=hooks)
        task = asyncio.create_task(session.run())
        try:
            conn = await venue.next_conn()
            await conn.expect(len(SUBSCRIBE))
            await conn.ws.send("hello")
            await feed.next_frame()

            started = loop.time()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, WAIT)
            took = loop.time() - started
            code = await conn.wait_closed()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        assert took < 1.0, took
        assert task.cancelled()
        assert code == CloseCode.GOING_AWAY
        assert hooks.reconnects == []
        assert hooks.up == [True, False]
        assert not session.connected.is_set()
        assert venue.connections == 1


@pytest.mark.parametrize("stage", ["backoff", "handshake"])
async def test_cancelling_during_backoff_or_a_stuck_handshake_does_not_hang(stage: str) -> None:
    # Timeline "backoff": the venue refuses the handshake -> the session sleeps a 15-30 s backoff -> cancel ->
    # run() ends at once. Timeline "handshake": the venue never answers the handshake -> the session waits
    # in connect() (open timeout 2 s) -> cancel -> run() ends at once.
    release = asyncio.Event()

    async def refuse_or_hang(ws: ServerConnection, request: Request) -> Response:
        if stage == "handshake":
            await release.wait()
        return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "down\n")

    feed = ScriptedFeed()
    slow_backoff = replace(FAST, backoff_initial_s=30.0, backoff_max_s=30.0)
    loop = asyncio.get_running_loop()
    try:
        async with fake_venue(refuse_or_hang) as venue:
            task = asyncio.create_task(_session(venue, feed, slow_backoff).run())
            try:
                await asyncio.wait_for(venue.handshake_seen.get(), WAIT)
                if stage == "backoff":
                    assert await feed.next_disconnect() == "rejected"  # now sleeping 15-30 s
                started = loop.time()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(task, WAIT)
                took = loop.time() - started
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                release.set()  # lets a hanging handshake finish so the server can shut down
    finally:
        release.set()

    assert took < 1.0, took
    assert task.cancelled()
    assert venue.connections == 0
    assert feed.disconnects == (["rejected"] if stage == "backoff" else [])


# --- 7. handshake refused ---------------------------------------------------------------------------------


async def test_refused_handshakes_are_retried_with_backoff_without_crashing() -> None:
    # Timeline: handshake 1 -> 429, handshake 2 -> 503, handshake 3 -> 429 -> handshake 4 accepted ->
    # subscriptions sent. Each refusal is one reconnect ("rejected"), with the nominal delay doubling.
    statuses = [HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.TOO_MANY_REQUESTS]

    async def refuse_first_three(ws: ServerConnection, request: Request) -> Response | None:
        if statuses:
            return ws.respond(statuses.pop(0), "come back later\n")
        return None

    feed, hooks, rng = ScriptedFeed(), Hooks(), SpyRandom()
    async with fake_venue(refuse_first_three) as venue:
        session = _session(venue, feed, hooks=hooks, rng=rng)
        async with running(session) as task:
            conn = await venue.next_conn()
            assert await conn.expect(len(SUBSCRIBE)) == SUBSCRIBE

            assert not task.done()
            assert venue.handshakes == 4 and venue.connections == 1
            assert hooks.reconnects == ["rejected"] * 3
            assert rng.nominal == [0.01, 0.02, 0.04]
            assert session.connects == 1
            assert feed.connected_calls == 1  # subscriptions only on an accepted connection


# --- 8. backoff reset only after a healthy connection -----------------------------------------------------


async def test_backoff_resets_only_after_a_connection_lived_healthy_after_s() -> None:
    # Timeline (healthy_after_s = 0.2, stale_after_s = 0.3):
    #   conn 1: closed right after subscribing (young)         -> nominal delay 0.01
    #   conn 2: closed right after subscribing (young)         -> 0.02 (kept growing)
    #   conn 3: silent, dropped by the watchdog after 0.3 s    -> lived >= 0.2 s: reset -> 0.01
    #   conn 4: closed right after subscribing (young)         -> 0.02 (grows again from the reset)
    #   conn 5: accepted.
    feed, rng = ScriptedFeed(), SpyRandom()
    settings = replace(FAST, healthy_after_s=0.2, stale_after_s=0.3)
    async with fake_venue() as venue, running(_session(venue, feed, settings, rng=rng)):
        for young in (True, True, False, True):
            conn = await venue.next_conn()
            await conn.expect(len(SUBSCRIBE))
            if young:
                await conn.ws.close(CloseCode.TRY_AGAIN_LATER)
            await feed.next_disconnect()
        await venue.next_conn()

        assert feed.disconnects == ["closed", "closed", "timeout", "closed"]
        assert rng.nominal == [0.01, 0.02, 0.01, 0.02]


async def test_handshakes_that_never_open_keep_growing_the_backoff() -> None:
    # Timeline: the venue never answers the opening handshake -> each attempt ends with the open timeout
    # (0.25 s, longer than healthy_after_s = 0.1 s) -> no connection ever opened, so nothing was healthy
    # and the nominal delay keeps doubling: 0.01, 0.02, 0.04.
    release = asyncio.Event()

    async def hang(ws: ServerConnection, request: Request) -> Response:
        await release.wait()
        return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "down\n")

    feed, hooks, rng = ScriptedFeed(), Hooks(), SpyRandom()
    settings = replace(FAST, connect_timeout_s=0.25, healthy_after_s=0.1)
    try:
        async with fake_venue(hang) as venue:
            async with running(_session(venue, feed, settings, hooks=hooks, rng=rng)):
                for _ in range(3):
                    assert await feed.next_disconnect() == "timeout"
                release.set()

            assert rng.nominal == [0.01, 0.02, 0.04]
            assert hooks.reconnects == ["timeout"] * 3
            assert venue.connections == 0
    finally:
        release.set()


# --- programming errors are not swallowed -----------------------------------------------------------------


async def test_a_failing_keepalive_crashes_run_instead_of_dying_silently() -> None:
    # Timeline: connect + subscribe -> first keepalive tick calls ping_frame(), which raises (a bug in the
    # handler) -> run() fails with that error and the socket is closed, instead of the keepalive task dying
    # unnoticed while the session streams on without pings until the venue drops it.
    class BrokenPing(ScriptedFeed):
        def ping_frame(self) -> str | None:
            raise RuntimeError("bug in ping_frame")

    feed = BrokenPing()
    settings = replace(FAST, ping_interval_s=0.05)
    async with fake_venue() as venue:
        task = asyncio.create_task(_session(venue, feed, settings).run())
        try:
            conn = await venue.next_conn()
            await conn.expect(len(SUBSCRIBE))
            with pytest.raises(RuntimeError, match="bug in ping_frame"):
                await asyncio.wait_for(task, WAIT)
            await conn.wait_closed()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task
        assert venue.connections == 1


async def test_connection_is_replaced_at_max_age_without_backoff() -> None:
    # Timeline: max_connection_age_s = 0.3 (Binance cuts at 24 h; we reconnect before it) -> the session
    # closes connection 1 normally (1000) at 0.3 s -> on_disconnected("scheduled") -> connection 2 opens
    # and resubscribes at once, with no backoff delay drawn.
    feed, hooks = ScriptedFeed(), Hooks()
    settings = replace(FAST, max_connection_age_s=0.3, backoff_initial_s=5.0, backoff_max_s=5.0)
    loop = asyncio.get_running_loop()
    async with fake_venue() as venue, running(_session(venue, feed, settings, hooks=hooks)):
        first = await venue.next_conn()
        assert await first.expect(len(SUBSCRIBE)) == SUBSCRIBE
        opened = loop.time()
        assert await feed.next_disconnect() == "scheduled"
        await first.wait_closed()
        assert first.close_code == CloseCode.NORMAL_CLOSURE
        second = await venue.next_conn()
        assert await second.expect(len(SUBSCRIBE)) == SUBSCRIBE
        assert loop.time() - opened < 0.3 + 2.0  # a 5 s backoff would have been far later
        assert hooks.reconnects == ["scheduled"]


class SlowFirstFrameFeed(ScriptedFeed):
    """Takes `busy_s` of CPU on the first frame (a handler that falls behind), and notes when it got to each."""

    def __init__(self, busy_s: float) -> None:
        super().__init__()
        self.busy_s = busy_s
        self.handled_at: list[int] = []

    def on_frame(self, raw: str | bytes, ts_recv: int) -> list[str]:
        if not self.handled_at:
            end = time.monotonic() + self.busy_s
            while time.monotonic() < end:  # busy, not asleep: the loop cannot run while a handler works
                pass
        self.handled_at.append(time.time_ns())
        return super().on_frame(raw, ts_recv)


async def test_ts_recv_is_when_the_bytes_arrived_not_when_the_loop_got_to_the_frame() -> None:
    # Timeline: the venue sends f0..f9 in one burst -> the handler spends 80 ms on f0 -> f1..f9, already
    # received, are handled late: their ts_recv says when they arrived, so the wait (>= 80 ms) is visible.
    feed = SlowFirstFrameFeed(busy_s=0.08)
    async with fake_venue() as venue:
        session = _session(venue, feed)
        async with running(session):
            conn = await venue.next_conn()
            assert await conn.expect(len(SUBSCRIBE)) == SUBSCRIBE
            await asyncio.wait_for(session.connected.wait(), WAIT)
            sent = [f'{{"topic":"t","seq":{i}}}' for i in range(10)]
            for frame in sent:
                await conn.ws.send(frame)
            got = [await feed.next_frame() for _ in sent]
    assert [text for text, _ in got] == sent
    waited_ms = [(handled - ts) / 1e6 for (_, ts), handled in zip(got, feed.handled_at, strict=True)]
    assert min(waited_ms[1:]) >= 70, waited_ms
