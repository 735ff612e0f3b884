"""Server plumbing shared by the venue simulators (`bybit.py`, `binanceusdm.py`, `okx.py`, `deribit.py`,
`hyperliquid.py` beside it).

Sits under those modules: it owns what every simulator does the same way and nothing a
venue defines. That is the aiohttp runner's lifecycle on one loopback socket, the per-client bounded outbound
queue and its writer task, disconnecting slow clients, the garbage-frame cycle, subscription bookkeeping, the
paced replay loop over a recorded tape, the venue's exchange clock (`TapeClock`: recorded exchange times mapped
onto the wall clock at every speed and across loops, optionally skewed), and serving until cancelled. Protocol
(routes, request handling, frame shapes, close reasons beyond the common two) stays in each venue's module.
Like those modules it must not import the daemon's parsers, books or metrics, and it never opens an outbound
connection.

Faults and truth (`faults.py`, `truth.py`). Every server has a `FaultScheduler` (`faults`, empty unless
`configure` is given specs; a venue declares what it injects in `SUPPORTED_FAULTS`) and a `TruthStore`
(`truth`). What is the same on every venue lives here: the connection faults (`connection_faults`: abrupt and
clean disconnects, half-open connections, the connection limit, exchange clock skew and jumps), REST rate
limiting (429/418 with Retry-After) and refused upgrades, both in one aiohttp middleware, which also serves
`GET /_flowgauge/truth` and `GET /_flowgauge/faults` whatever routes the venue has.

Bounds. Each client has one bounded outbound queue (`client_queue` frames, plus `reply_headroom` for replies
to the client's own requests) drained by one writer task. A delivery that finds the queue full disconnects
the client (close 1008, counted in `slow_disconnects`); at speed 0 the player first waits up to
`slow_client_timeout` for room. Every task has an owner: the server's player tasks are cancelled and awaited
by `close()`, a connection's reader and writer by its handler.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeGuard, TypeVar

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from flowgauge.simulate.faults import CONNECTION_FAULTS, FaultScheduler, FaultSpec, check_supported
from flowgauge.simulate.truth import DEFAULT_TRUTH_CAPACITY, TruthStore

__all__ = [
    "CLOSE_TIMEOUT_S",
    "GARBAGE_KINDS",
    "SIMULATOR_CLASSES",
    "GarbageCycle",
    "SimClient",
    "SimMarket",
    "SimulatorServer",
    "Subscriptions",
    "TapeClock",
    "bind_port",
    "is_int",
    "json_response",
    "listen",
    "now_ms",
    "play_tape",
    "serve_until_cancelled",
    "simulator_class",
    "simulator_runner",
    "start_listening",
]

CLOSE_TIMEOUT_S = 1.0  # websocket close handshake and HTTP shutdown grace
GARBAGE_KINDS = ("non_json", "bad_types", "truncated")
# The venues all send text frames only: a binary frame of invalid UTF-8 is as wrong as it gets.
NON_JSON_FRAME = b"\x00\xff\xfe<garbage \x80\x81 not json>"
_YIELD_EVERY = 256  # frames played between forced yields when the player is not sleeping

K = TypeVar("K", bound=Hashable)
S = TypeVar("S", bound="SimulatorServer[Any]")
C = TypeVar("C", bound="SimClient[Any, Any]")


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (port 0 picks a free one).

    Raises:
        OSError: whose message names `host:port` and the cause (a busy port, an unknown host, no permission).
    """
    return start_listening(bind_port(host, port), host, port)


def bind_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` but not listening yet: it holds the port (a busy one fails here,
    with the message `listen` gives) while connections are still refused. `start_listening` opens it.
    """
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


def start_listening(sock: socket.socket, host: str, port: int) -> socket.socket:
    """`sock` (from `bind_port`) listening and non-blocking; closed if that fails (the message names host:port)."""
    try:
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


# --------------------------------------------------------------------------------------------------
# Garbage frames


class GarbageCycle:
    """Turns through the malformed frames a client is sent after every `garbage_every` data frames: a non-JSON
    binary frame, a well-formed frame with wrongly typed fields (the venue's), a truncated copy of the last
    frame (or of `fallback` before any)."""

    __slots__ = ("_turn", "fallback")

    def __init__(self, fallback: str) -> None:
        self.fallback = fallback
        self._turn = 0

    def next_frame(self, last_text: str, bad_payload: Callable[[], Any]) -> tuple[str, str | bytes]:
        """(kind, frame) of the next garbage frame; `bad_payload` is only called for its turn."""
        kind = GARBAGE_KINDS[self._turn % len(GARBAGE_KINDS)]
        self._turn += 1
        if kind == "non_json":
            return kind, NON_JSON_FRAME
        if kind == "bad_types":
            return kind, orjson.dumps(bad_payload()).decode()
        last = last_text or self.fallback
        return kind, last[: max(1, len(last) // 2)]


# --------------------------------------------------------------------------------------------------
# Clients


class SimClient(Generic[S, K]):
    """One websocket client: its subscription keys and its bounded outbound queue, drained by `run_writer`.

    Subclasses name the venue's wrongly typed frame (`bad_payload`) and the truncated frame used before any
    data was sent (`TRUNCATED_FALLBACK`). `ROOM_RESERVE` frames of the queue are kept free of data when the
    player asks for room (a venue whose one played frame fans out to several messages needs that).
    """

    ROOM_RESERVE: ClassVar[int] = 0
    TRUNCATED_FALLBACK: ClassVar[str] = ""

    def __init__(self, sim: S, ws: web.WebSocketResponse) -> None:
        self.sim = sim
        self.ws = ws
        self.keys: set[K] = set()  # what this client subscribed
        self.kicked: str | None = None  # why the server is closing this client
        self.data_sent = 0
        self.writer_task: asyncio.Task[None] | None = None
        self.last_key: K | None = None  # key of the last data frame written
        # (text, key or None for replies to requests, True for a websocket ping frame)
        self._queue: collections.deque[tuple[str, K | None, bool]] = collections.deque()
        self._items = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._last_text = ""
        self._garbage = GarbageCycle(self.TRUNCATED_FALLBACK)
        self.transport: asyncio.Transport | None = None  # set by `_run_client`
        self.frozen = False  # half-open: nothing is read or written any more (see `freeze`)

    @property
    def tag(self) -> str:
        """Suffix of this client's task names ("" for none)."""
        return ""

    def log_fields(self) -> dict[str, Any]:
        """Context logged with this client's disconnects and failures."""
        return {}

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.sim.client_queue - self.ROOM_RESERVE

    def offer(self, text: str, key: K | None, *, reply: bool = False, ping: bool = False) -> bool:
        """Queue one frame without waiting; False if there is no room (the caller then disconnects us)."""
        if self.frozen:
            return True  # a half-open connection swallows everything (the peer must notice the silence)
        limit = self.sim.client_queue + (self.sim.reply_headroom if reply else 0)
        if self.kicked is not None or len(self._queue) >= limit:
            return False
        self._queue.append((text, key, ping))
        self._items.set()
        if self.full:
            self._room.clear()
        return True

    async def wait_room(self, patience: float) -> bool:
        try:
            async with asyncio.timeout(patience):
                await self._room.wait()
        except TimeoutError:
            return False
        return self.kicked is None

    def freeze(self) -> None:
        """Half-open: stop reading (pings go unanswered) and writing, without closing anything."""
        self.frozen = True
        self._queue.clear()
        if self.transport is not None:
            self.transport.pause_reading()

    def abort(self) -> None:
        """Abrupt disconnect: reset the TCP connection (no close frame) and stop the writer."""
        self.kick("abort")
        if self.transport is not None:
            # asyncio's transport may have finished closing already (it drops its loop then, and abort() fails
            # on it): there is nothing left to reset. Seen in a soak: a disconnect fault on a client whose close
            # had just completed took the whole simulator process down.
            with contextlib.suppress(AttributeError):
                self.transport.abort()

    def kick(self, reason: str) -> None:
        """Disconnect: stop the writer; the connection handler closes the socket."""
        if self.kicked is not None:
            return
        self.kicked = reason
        self._queue.clear()
        self._room.set()  # wake a player waiting for room; it sees `kicked` and moves on
        if self.writer_task is not None:
            self.writer_task.cancel()

    async def run_writer(self) -> None:
        queue = self._queue
        sim = self.sim
        try:
            while True:
                while not queue:
                    self._items.clear()
                    await self._items.wait()
                text, key, ping = queue.popleft()
                if self.frozen:
                    await asyncio.Event().wait()  # half-open: write nothing more; cancelled on the way out
                if not self.full:
                    self._room.set()
                if ping:
                    await self.ws.ping(text.encode())
                    continue
                await self.ws.send_str(text)
                self._after_send()
                if key is None:
                    continue
                self.data_sent += 1
                sim.frames_sent += 1
                self._last_text, self.last_key = text, key
                every = sim.garbage_every
                if every and self.data_sent % every == 0:
                    await self._send_garbage()
        except ConnectionError:
            return  # the peer went away; the handler's reader sees the close

    def _after_send(self) -> None:
        """Called after each text frame is written (a venue's idle watchdog counts it as activity)."""

    def bad_payload(self) -> Any:
        """A well-formed frame of the venue with wrongly typed fields, for this client's subscriptions."""
        raise NotImplementedError

    async def _send_garbage(self) -> None:
        kind, frame = self._garbage.next_frame(self._last_text, self.bad_payload)
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)
        self.sim.garbage_sent += 1
        self.sim.garbage_by_kind[kind] += 1


class Subscriptions(Generic[K, C]):
    """Subscribers per key, kept in step with each client's `keys`; `active` is set while anyone subscribes."""

    def __init__(self) -> None:
        self.by_key: dict[K, set[C]] = collections.defaultdict(set)
        self.active = asyncio.Event()

    def __iter__(self) -> Iterator[K]:
        return iter(self.by_key)

    def get(self, key: K) -> set[C] | None:
        return self.by_key.get(key)

    def add(self, client: C, key: K) -> None:
        client.keys.add(key)
        self.by_key[key].add(client)
        self.active.set()

    def remove(self, client: C, key: K) -> None:
        client.keys.discard(key)
        subs = self.by_key.get(key)
        if subs is not None:
            subs.discard(client)
            if not subs:
                del self.by_key[key]
        if not self.by_key:
            self.active.clear()

    def drop(self, client: C) -> None:
        for key in list(client.keys):
            self.remove(client, key)

    def clients_of(self, keys: Iterable[K]) -> list[C]:
        """Subscribers of any of `keys` (a client subscribed to several appears once per key)."""
        return [client for key in keys for client in self.by_key.get(key, ())]


# --------------------------------------------------------------------------------------------------
# The server


class SimulatorServer(Generic[C]):
    """One loopback port serving a venue's REST and websockets from a recording; subclasses supply the venue.

    Hooks: `_prepare` (load the recording, build state), `_make_app` (routes), `_start_players` (spawn the
    player tasks with `spawn`), `_started_fields` (what the start log line says). Counters common to every
    venue: `frames_sent`, `gaps_injected`, `garbage_sent`, `garbage_by_kind`, `slow_disconnects`,
    `bad_requests`, `connections_total`.
    """

    # kick reason -> the counter it increments (and logs); other reasons are counted by the venue if at all
    KICK_COUNTERS: ClassVar[Mapping[str, str]] = {"slow": "slow_disconnects"}
    CLOSE_REASONS: ClassVar[Mapping[str, tuple[WSCloseCode, bytes]]] = {
        "slow": (WSCloseCode.POLICY_VIOLATION, b"slow consumer"),
        "shutdown": (WSCloseCode.GOING_AWAY, b"server shutdown"),
        "forced": (WSCloseCode.GOING_AWAY, b"scheduled disconnect"),
    }
    TASK_PREFIX: ClassVar[str] = "simulator"
    # Fault kinds this venue injects (`faults.FAULT_KINDS`); the CLI refuses others in one line.
    SUPPORTED_FAULTS: ClassVar[frozenset[str]] = frozenset()
    TASK_FAILED_EVENT: ClassVar[str] = "simulator_market_failed"

    def __init__(
        self,
        recording_path: str | os.PathLike[str],
        host: str,
        port: int,
        speed: float,
        loop: bool,
        garbage_every: int | None,
        gap_every: int | None,
        *,
        client_queue: int,
        reply_headroom: int,
        slow_client_timeout: float,
        clock_skew_s: float = 0.0,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        for name, value in (("garbage_every", garbage_every), ("gap_every", gap_every)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None")
        if client_queue < 1 or reply_headroom < 1:
            raise ValueError("client_queue and reply_headroom must be >= 1")
        self.recording_path = Path(recording_path)
        self.host = host
        self.port = port
        self.speed = speed
        self.loop = loop
        self.garbage_every = garbage_every
        self.gap_every = gap_every
        self.client_queue = client_queue
        self.reply_headroom = reply_headroom
        self.slow_client_timeout = slow_client_timeout
        # The venue's exchange clock: recorded times mapped onto wall time, shifted by `clock_skew_s`.
        self.clock = TapeClock(speed, round(clock_skew_s * 1000))
        # counters
        self.frames_sent = 0  # data frames written to clients (snapshots included, garbage not)
        self.gaps_injected = 0
        self.garbage_sent = 0
        self.garbage_by_kind: collections.Counter[str] = collections.Counter()
        self.slow_disconnects = 0
        self.bad_requests = 0  # client requests answered with an error
        self.connections_total = 0
        self.upgrades_refused = 0  # websocket upgrades refused at the (faulted) connection limit
        # The last HTTP requests (wall time s, path, status or 0 when answered by the venue's handler): lets a
        # test see when a client came back after a 429.
        self.requests_log: collections.deque[tuple[float, str, int]] = collections.deque(maxlen=1000)
        self.faults = FaultScheduler()
        self.truth = TruthStore(DEFAULT_TRUTH_CAPACITY)
        self._clocks: list[TapeClock] = [self.clock]  # every clock this server serves (markets add theirs)
        self._refuse_upgrades = 0
        self._fault_timers: set[asyncio.TimerHandle] = set()
        self._log = logging.getLogger(type(self).__module__)  # the venue module's logger
        self._clients: set[C] = set()
        self._no_clients = asyncio.Event()  # lets close() wait for handlers to finish their close handshakes
        self._no_clients.set()
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._given_sock: socket.socket | None = None  # bound by the caller (see `use_socket`)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed: asyncio.Future[None] | None = None

    # -- venue hooks ---------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Load the recording and build the served state (before the socket is bound)."""

    def _make_app(self) -> web.Application:
        raise NotImplementedError

    def _start_players(self) -> None:
        """Spawn the player tasks (after the socket is bound)."""

    def _started_fields(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.bound_port, "speed": self.speed}

    # -- faults and truth ----------------------------------------------------------------------------

    def configure(self, faults: Sequence[FaultSpec] = (), truth_capacity: int | None = None) -> None:
        """Set the faults to inject and the truth ring's size. Before `start`, or while running: the new
        schedule counts its `after_s` from now (the truth is kept unless `truth_capacity` is given).

        Raises:
            FaultError: a fault this venue does not inject (one line).
        """
        check_supported(faults, self.SUPPORTED_FAULTS, self.TASK_PREFIX)
        self.faults = FaultScheduler(faults)
        if truth_capacity is not None:
            self.truth = TruthStore(truth_capacity)

    def add_clock(self, clock: TapeClock) -> None:
        """A market's own clock: clock faults move it with the server's."""
        self._clocks.append(clock)

    def connection_faults(self, instrument: str | None, clients: Iterable[C]) -> None:
        """One book message of `instrument` is being played to `clients` (its subscribers): inject the
        connection faults due now (see `faults.py`). Call after `faults.frame(instrument)`."""
        faults = self.faults
        if not faults:
            return
        for kind in CONNECTION_FAULTS:
            if not faults.wants(kind):
                continue
            spec = faults.take(kind, instrument)
            if spec is None:
                continue
            targets = list(clients)
            self._log.info("simulator_fault", extra={"fields": {"fault": spec.describe(), "clients": len(targets)}})
            if kind == "disconnect":
                for client in targets:
                    client.abort()
            elif kind == "forced_disconnect":
                for client in targets:
                    client.kick("forced")
            elif kind == "half_open":
                for client in targets:
                    client.freeze()
                    self.later(float(spec.param("for_s")), client.abort)
            elif kind == "conn_limit":
                self._refuse_upgrades += int(spec.param("refuse"))
                for client in targets:
                    client.abort()
            elif kind in ("clock_skew", "clock_jump"):
                ms = round(float(spec.param("seconds")) * 1000)
                for clock in self._clocks:
                    clock.shift(ms - clock.skew_ms if kind == "clock_skew" else ms)

    def later(self, delay_s: float, callback: Callable[..., object], *args: Any) -> None:
        """Run `callback(*args)` in `delay_s` (a delayed fault effect); cancelled by `close()`."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._fault_timers = {h for h in self._fault_timers if h.when() > now}  # forget the ones that ran
        self._fault_timers.add(loop.call_later(delay_s, callback, *args))

    @web.middleware
    async def _fault_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Serves /_flowgauge/*, refuses upgrades at the faulted connection limit, rate-limits REST."""
        path = request.path
        if path.startswith("/_flowgauge/"):
            if path == "/_flowgauge/truth":
                status, body = self.truth.answer(request.query)
                return json_response(body, status)
            if path == "/_flowgauge/faults":
                return json_response({**self.faults.report(), "upgrades_refused": self.upgrades_refused})
            return json_response({"error": f"not found: {path}"}, 404)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if self._refuse_upgrades > 0:
                self._refuse_upgrades -= 1
                self.upgrades_refused += 1
                return json_response({"error": "too many connections"}, 429, {"Retry-After": "1"})
        else:
            spec = None
            if self.faults.wants("rate_limit"):
                spec = self.faults.take(
                    "rate_limit",
                    request.query.get("symbol") or request.query.get("instId"),  # Binance/Bybit, OKX
                    accept=lambda s: s.param("path") in path,
                )
            self.requests_log.append((time.time(), path, int(spec.param("status")) if spec is not None else 0))
            if spec is not None:
                headers = {"Retry-After": f"{float(spec.param('retry_after')):g}"}
                status = int(spec.param("status"))
                return json_response({"error": "rate limited", "status": status}, status, headers)
        return await handler(request)

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def bound_port(self) -> int:
        if self._sock is None:
            raise RuntimeError("simulator not started")
        return int(self._sock.getsockname()[1])

    @property
    def http_url(self) -> str:
        return f"http://{self._url_host()}:{self.bound_port}"

    @property
    def ws_base(self) -> str:
        return f"ws://{self._url_host()}:{self.bound_port}"

    @property
    def clients(self) -> int:
        return len(self._clients)

    def use_socket(self, sock: socket.socket) -> None:
        """Serve on `sock` (from `bind_port`) instead of binding `host:port` at start; the server closes it.

        Lets a caller starting several simulators bind every port before any starts, so it can report every
        busy port at once instead of whichever simulator failed first.
        """
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self._given_sock = sock

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        try:
            await self._prepare()
        except BaseException:
            if self._given_sock is not None:
                self._given_sock.close()
            raise
        self._failed = asyncio.get_running_loop().create_future()
        app = self._make_app()
        app.middlewares.append(self._fault_middleware)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=CLOSE_TIMEOUT_S)
        await runner.setup()
        self._runner = runner
        try:
            given = self._given_sock
            self._sock = listen(self.host, self.port) if given is None else start_listening(given, self.host, self.port)
            await web.SockSite(runner, self._sock).start()
        except BaseException:
            await self.close()
            raise
        self._start_players()
        self._log.info("simulator_started", extra={"fields": self._started_fields()})

    async def close(self) -> None:
        for client in list(self._clients):
            self.kick(client, "shutdown")
        # Let each handler finish its close handshake while the server still reads the peers' replies;
        # the server shutdown below would otherwise leave them to time out.
        try:
            async with asyncio.timeout(2 * CLOSE_TIMEOUT_S):
                await self._no_clients.wait()
        except TimeoutError:
            self._log.warning("simulator_close_timeout", extra={"fields": {"clients": len(self._clients)}})
        for handle in self._fault_timers:
            handle.cancel()
        self._fault_timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._sock is not None:
            self._sock.close()
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(None)

    async def wait(self) -> None:
        """Return once the simulator is closed; raise if a player task crashed (that is a bug)."""
        if self._failed is None:
            raise RuntimeError("simulator not started")
        await asyncio.shield(self._failed)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a player task owned by the server: cancelled by `close()`, its crash fails `wait()`."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error(self.TASK_FAILED_EVENT, extra={"fields": {"task": task.get_name()}}, exc_info=exc)
            if self._failed is not None and not self._failed.done():
                self._failed.set_exception(exc)

    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    # -- clients -------------------------------------------------------------------------------------

    def kick(self, client: C, reason: str) -> None:
        if client.kicked is None:
            counter = self.KICK_COUNTERS.get(reason)
            if counter is not None:
                setattr(self, counter, getattr(self, counter) + 1)
                self._log_disconnect(client, reason)
        client.kick(reason)

    def _log_disconnect(self, client: C, reason: str) -> None:
        self._log.warning("simulator_slow_client", extra={"fields": client.log_fields()})

    def offer_or_kick(self, client: C, text: str, key: Any, *, reply: bool = False) -> bool:
        """Queue one frame for `client`, or disconnect it as slow if its queue has no room."""
        if client.offer(text, key, reply=reply):
            return True
        self.kick(client, "slow")
        return False

    def deliver(self, clients: Iterable[C], text: str, key: Any) -> None:
        """Queue one data frame for every client in `clients` (a copy is iterated: kicks may change it)."""
        for client in list(clients):
            if not client.offer(text, key):
                self.kick(client, "slow")

    def _reply(self, client: C, body: Any) -> bool:
        """Queue the JSON answer to a client's own request (may use the reply headroom)."""
        return self.offer_or_kick(client, orjson.dumps(body).decode(), None, reply=True)

    async def wait_for_room(self, candidates: Callable[[], Iterable[C]]) -> None:
        """Speed 0: let every full client among `candidates()` drain before the next frame (bounded wait)."""
        while True:
            full = [c for c in dict.fromkeys(candidates()) if c.full]
            if not full:
                return
            for client in full:
                if not await client.wait_room(self.slow_client_timeout):
                    self.kick(client, "slow")

    # -- websockets ----------------------------------------------------------------------------------

    async def _open_ws(
        self, request: web.Request, *, autoping: bool = True, max_msg_size: int = 1 << 16
    ) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            autoping=autoping, heartbeat=None, compress=False, max_msg_size=max_msg_size, timeout=CLOSE_TIMEOUT_S
        )
        await ws.prepare(request)
        return ws

    async def _run_client(
        self,
        request: web.Request,
        client: C,
        read: Coroutine[Any, Any, None],
        *,
        leave: Callable[[], None],
        extra: Mapping[str, Coroutine[Any, Any, None]] | None = None,
    ) -> web.WebSocketResponse:
        """Serve one accepted websocket until its reader, writer or an `extra` task ends, then close it.

        `leave` runs first on the way out (drop the client's subscriptions); the tasks are then cancelled and
        awaited, and the socket is closed with the code its kick reason maps to.
        """
        self._clients.add(client)
        self._no_clients.clear()
        self.connections_total += 1
        client.transport = request.transport
        suffix = f":{client.tag}" if client.tag else ""
        reader = asyncio.create_task(read, name=f"{self.TASK_PREFIX}-read{suffix}")
        writer = asyncio.create_task(client.run_writer(), name=f"{self.TASK_PREFIX}-write{suffix}")
        tasks = {reader, writer}
        for role, coro in (extra or {}).items():
            tasks.add(asyncio.create_task(coro, name=f"{self.TASK_PREFIX}-{role}{suffix}"))
        client.writer_task = writer
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            try:
                leave()
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks)
                for task in tasks:
                    if not task.cancelled() and task.exception() is not None:
                        self._log.error(
                            "simulator_client_failed", extra={"fields": client.log_fields()}, exc_info=task.exception()
                        )
                await self._close_ws(client.ws, request, client.kicked)
            finally:
                self._clients.discard(client)
                if not self._clients:
                    self._no_clients.set()
        return client.ws

    async def _close_ws(self, ws: web.WebSocketResponse, request: web.Request, kicked: str | None) -> None:
        code, message = self.CLOSE_REASONS.get(kicked or "", (WSCloseCode.OK, b""))
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await ws.close(code=code, message=message)
        except (TimeoutError, ConnectionError):
            if request.transport is not None:
                request.transport.abort()  # a peer that reads nothing never answers the close

    @staticmethod
    async def _read_requests(ws: web.WebSocketResponse, handle: Callable[[str | None], None]) -> None:
        """Hand each text frame (None for a binary one) to `handle` until the peer closes."""
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                handle(msg.data)
            elif msg.type is WSMsgType.BINARY:
                handle(None)
            else:
                return


# --------------------------------------------------------------------------------------------------
# The paced replay loop


class _Timed(Protocol):
    ts: float  # recorded local receive time, unix seconds


F = TypeVar("F", bound=_Timed)

# A recorded frame's exchange times trail its recorded receive time by its recorded latency, which includes the
# recorder's own backlog (a burst after subscribing arrives seconds late). The served clock keeps at most this much
# of that extra lag, so every frame leaves stamped within it of the moment it is sent.
MAX_EXTRA_LAG_MS = 200


class TapeClock:
    """Where the recorded exchange times of the loop being played land on the served (venue) clock.

    At speed N > 0 a recorded exchange time t is served as `origin + (t - anchor) / N` (+ the skew): the loop's
    origin is the wall clock when the loop starts, and the anchor is the first frame's recorded receive time less
    the recording's smallest latency, so a frame recorded with that latency is stamped the moment it is sent.
    Gaps shrink by N exactly as the pacing does, so exchange time follows wall time at every speed and a window
    holds N times the recorded activity. Two floors keep it honest: a stamp is never more than
    `MAX_EXTRA_LAG_MS` before the frame's scheduled send time (old news in a recording, such as trades re-sent on
    subscribe, would otherwise put the clock back), and never before the largest stamp of the previous loop (so
    every stream stays monotonic across loops). At speed 0 there is no wall schedule: the recorded spacing is
    kept and each loop starts at least the recording's exchange-time span after the previous one.

    `skew_ms` shifts the whole served clock (`flowgauge simulate --clock-skew S`): a venue whose clock is wrong.
    """

    __slots__ = ("_floor", "_inv", "_loop_floor", "anchor_ms", "loop", "max_ms", "origin_ms", "skew_ms")

    def __init__(self, speed: float, skew_ms: int = 0) -> None:
        self._inv = 1.0 / speed if speed > 0 else 1.0
        self.skew_ms = skew_ms
        self.loop = 0
        self.origin_ms = 0  # served time of `anchor_ms` in this loop
        self.anchor_ms = 0
        self.max_ms: int | None = None  # largest stamp served so far
        self._loop_floor = -(1 << 62)  # largest stamp of the previous loop
        self._floor = self._loop_floor

    def ms(self, recorded_ms: int) -> int:
        """The served stamp of recorded exchange time `recorded_ms` (ms), within the frame being played."""
        stamp = max(self.origin_ms + round((recorded_ms - self.anchor_ms) * self._inv), self._floor)
        if self.max_ms is None or stamp > self.max_ms:
            self.max_ms = stamp
        return stamp

    def at(self, recorded_ms: int) -> int:
        """Like `ms` without floors or bookkeeping: for times that are not events, e.g. a state's age."""
        return self.origin_ms + round((recorded_ms - self.anchor_ms) * self._inv)

    def now_ms(self) -> int:
        """The venue's clock now, for stamps made up live (REST answers, synthetic pushes)."""
        return now_ms() + self.skew_ms

    # -- driven by `play_tape` ------------------------------------------------------------------------

    def start_loop(self, loop: int, origin_ms: int, anchor_ms: int) -> None:
        self.loop = loop
        self.origin_ms = origin_ms + self.skew_ms
        self.anchor_ms = anchor_ms
        if self.max_ms is not None:
            self._loop_floor = self.max_ms
        self._floor = self._loop_floor

    def before_frame(self, send_ms: int | None) -> None:
        """The next frame is sent at wall time `send_ms` (None at speed 0)."""
        if send_ms is None:
            self._floor = self._loop_floor
        else:
            self._floor = max(self._loop_floor, send_ms + self.skew_ms - MAX_EXTRA_LAG_MS)

    def paused(self, idle_ms: int) -> None:
        self.origin_ms += idle_ms

    def shift(self, delta_ms: int) -> None:
        """Move the served clock by `delta_ms` from now on (the clock faults): skew and stamps alike."""
        self.skew_ms += delta_ms
        self.origin_ms += delta_ms


async def play_tape(
    sim: SimulatorServer[Any],
    frames: Sequence[F],
    active: asyncio.Event,
    *,
    latency_ms: int,
    ts_span_ms: int,
    wait_for_room: Callable[[F], Awaitable[None]],
    play: Callable[[F, int, TapeClock], None],
    looped: Callable[[], None],
    on_loop: Callable[[int, TapeClock], None] | None = None,
    clock: TapeClock | None = None,
) -> None:
    """Play `frames` in order, paced by the recorded gaps / `sim.speed`, looping while `sim.loop`.

    Waits while `active` is clear (nobody subscribed) and resumes where it was, not with a burst. At speed 0
    each frame waits for room (`wait_for_room`) instead of a timer. `play(frame, loop, clock)` plays one
    frame, stamping its exchange times with `clock.ms` (see `TapeClock`: the smallest recorded latency is
    `latency_ms`, the exchange-time span `ts_span_ms`); `clock` defaults to `sim.clock`. `on_loop(loop, clock)`
    runs as each loop starts, `looped()` as each ends.
    """
    if not frames:
        return
    clock = clock if clock is not None else sim.clock
    first_ts = frames[0].ts
    first_ms = round(first_ts * 1000)
    anchor = first_ms - latency_ms
    speed = sim.speed
    loop = 0
    while True:
        await active.wait()
        wall = now_ms()
        # At speed 0 there is no schedule: the recorded spacing, each loop after the last one's span.
        origin = wall if speed > 0 or loop == 0 else max(wall, clock.origin_ms - clock.skew_ms + ts_span_ms)
        clock.start_loop(loop, origin, anchor)
        if on_loop is not None:
            on_loop(loop, clock)
        base = time.monotonic()
        for n, frame in enumerate(frames):
            if not active.is_set():
                paused = time.monotonic()
                await active.wait()
                idle = time.monotonic() - paused
                base += idle  # resume where we were, not with a burst
                clock.paused(round(idle * 1000))
                wall += round(idle * 1000)
            if speed > 0:
                offset = (frame.ts - first_ts) / speed
                delay = base + offset - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                clock.before_frame(wall + round(offset * 1000))
            else:
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                await wait_for_room(frame)
                clock.before_frame(None)
            play(frame, loop, clock)
        loop += 1
        looped()
        if not sim.loop:
            return


# --------------------------------------------------------------------------------------------------
# Markets


class Tape(Protocol[F]):
    """What the player needs of a prepared recording."""

    frames: list[F]  # in recorded receive-time order
    latency_ms: int  # smallest recorded (receive time - exchange time)
    ts_span_ms: int  # > max - min over exchange times


class SimMarket(Generic[S, K, C, F]):
    """One websocket path's shared replay: its subscribers and the player of its tape.

    A venue's market adds its live state, `subscribe` (which queues the state a late subscriber needs),
    `_keys_of` (where a frame goes, for the speed-0 wait) and `_play_at` (play one frame).
    """

    def __init__(self, sim: S, tape: Tape[F]) -> None:
        self.sim = sim
        self.tape = tape
        self.subs: Subscriptions[K, C] = Subscriptions()  # `active` while anyone subscribes here
        self.loops_completed = 0
        self.clock = TapeClock(sim.speed, sim.clock.skew_ms)  # this tape's own (a server may play several)
        sim.add_clock(self.clock)

    def unsubscribe(self, client: C, key: K) -> None:
        self.subs.remove(client, key)

    def drop(self, client: C) -> None:
        self.subs.drop(client)

    async def run(self) -> None:
        tape = self.tape
        await play_tape(
            self.sim,
            tape.frames,
            self.subs.active,
            latency_ms=tape.latency_ms,
            ts_span_ms=tape.ts_span_ms,
            wait_for_room=self._wait_for_room,
            play=self._play_at,
            looped=self._looped,
            clock=self.clock,
        )

    def _looped(self) -> None:
        self.loops_completed += 1

    async def _wait_for_room(self, frame: F) -> None:
        """Speed 0: let every subscriber this frame goes to drain before it is played (bounded wait)."""
        keys = self._keys_of(frame)
        await self.sim.wait_for_room(lambda: self.subs.clients_of(keys))

    def _keys_of(self, frame: F) -> Sequence[K]:
        raise NotImplementedError

    def _play_at(self, frame: F, loop: int, clock: TapeClock) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------
# The entry point


async def serve_until_cancelled(sim: S, on_ready: Callable[[S], None] | None = None) -> None:
    """Start `sim`, hand it to `on_ready`, and serve until cancelled (or until a player task crashes)."""
    async with sim:
        if on_ready is not None:
            on_ready(sim)
        await sim.wait()


SIMULATOR_CLASSES: dict[str, type[SimulatorServer[Any]]] = {}  # venue module name -> its server class


def simulator_class(module: str) -> type[SimulatorServer[Any]]:
    """The server class of a venue module (imported) whose `run_simulator` was made by `simulator_runner`."""
    return SIMULATOR_CLASSES[module]


def simulator_runner(
    sim_cls: Callable[..., S], default_port: int, command: str
) -> Callable[..., Coroutine[Any, Any, None]]:
    """The module-level `run_simulator` of one venue: build `sim_cls` and serve it until cancelled.

    The function made has the signature every venue module exports (the CLI calls it by keyword):
    `run_simulator(recording_path, host="127.0.0.1", port=default_port, speed=1.0, loop=True,
    garbage_every=None, gap_every=None, *, on_ready=None, sock=None, **options)`; `options` go to the
    constructor, and `sock` (bound by `bind_port`, then owned by the simulator) replaces binding `port`.
    `faults` (fault specs) and `truth_capacity` go to `SimulatorServer.configure`.
    """
    SIMULATOR_CLASSES[sim_cls.__module__] = sim_cls  # type: ignore[assignment]

    async def run_simulator(
        recording_path: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = default_port,
        speed: float = 1.0,
        loop: bool = True,
        garbage_every: int | None = None,
        gap_every: int | None = None,
        *,
        on_ready: Callable[[S], None] | None = None,
        sock: socket.socket | None = None,
        **options: Any,
    ) -> None:
        faults: Sequence[FaultSpec] = options.pop("faults", ())
        truth_capacity: int | None = options.pop("truth_capacity", None)
        try:
            sim = sim_cls(recording_path, host, port, speed, loop, garbage_every, gap_every, **options)
            sim.configure(faults, truth_capacity)
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        if sock is not None:
            sim.use_socket(sock)
        await serve_until_cancelled(sim, on_ready)

    run_simulator.__doc__ = f"Serve until cancelled (the CLI's `{command}`). `on_ready` gets the started simulator."
    run_simulator.__module__ = sim_cls.__module__
    return run_simulator
