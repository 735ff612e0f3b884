"""The measured paths of `flowgauge bench`: flowgauge's pipeline (and cryptofeed's) timed on the same frames.

Sits under `flowgauge.bench`, on top of everything it measures (connectors, book, engine, publish); the daemon
never imports it. Each function builds its objects first, then times only the work under test, and returns
plain figures; `bench.report` repeats, interleaves and compares them. It must not change what it measures:
the pipeline is used exactly as the daemon wires it (venue adapter -> parser -> `Engine` -> publishers).

Paths:
* `Pipeline(full=False)`: parse + book only (parser -> `BookSync` per instrument).
* `Pipeline(full=True)`: parse -> book -> every metric -> `codec.encode` -> published to an `EmbeddedBus`
  (no socket server) with one in-process subscriber being drained, and to a `NullPublisher`. The payload is the
  frozen `core-v1` field set (metric family "core") unless `families` says otherwise: the ratios stay comparable
  while families are added (`full_path_all_fields_*` measure the default families).
* `e2e_ours` / `e2e_cryptofeed` / `e2e_transport`: a `FrameServer` child process pushes recorded Bybit frames
  over a loopback websocket as fast as the client reads; the client runs the full path (or cryptofeed's
  handler, or nothing: the transport's own ceiling).
* `e2e_ours_picows` / `e2e_transport_picows`: the same with picows as the websocket client.
* Latency at a rate lives in `bench.feeder` (a feeder process, receive -> publish with queueing included).
* `rss_child` / `scale_out`: fresh child processes (memory of 500 books of 200 levels; two processes each
  running the full path on half of the instruments).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowgauge import core
from flowgauge.bench.child import SPAWN, ChildServer
from flowgauge.bench.frames import Item, RecordedFeed, RestSnapshot, frame_count, level_count, load_bybit
from flowgauge.bench.synthetic import SyntheticStream
from flowgauge.book.sync import BookSync
from flowgauge.connectors import registry
from flowgauge.engine import Engine
from flowgauge.metrics.families import CORE
from flowgauge.publish.base import NullPublisher
from flowgauge.publish.embedded import EmbeddedBus, Message, Subscription
from flowgauge.types import BadFrame, BookDelta, BookSnapshot, Instrument

__all__ = [
    "CORE_V1",
    "FrameServer",
    "Pipeline",
    "Run",
    "e2e_cryptofeed",
    "e2e_ours",
    "e2e_ours_picows",
    "e2e_transport",
    "e2e_transport_picows",
    "loop_factory",
    "measure_cryptofeed",
    "measure_ours",
    "picows_available",
    "profile_full_path",
    "rss",
    "scale_out",
]

_DRAIN_EVERY = 64  # synchronous runs drain the subscriber this often, like a consumer task woken by the loop
_SUB_QUEUE = 10_000  # the bus's default bound; a drop in a measured run is reported, never hidden
_CHILD_TIMEOUT_S = 120.0

CORE_V1: tuple[str, ...] = (CORE,)
"""The metric families of the frozen `core-v1` payload every ratio is measured on (report.FIELD_SET)."""


@dataclass(slots=True)
class Run:
    """Figures of one timed run."""

    name: str
    messages: int  # websocket frames processed
    levels: int  # price levels those frames carried
    seconds: float
    published: int = 0  # payloads accepted by the embedded bus
    dropped: int = 0  # payloads the bus dropped (a subscriber fell behind); should be 0
    invalid_books: int = 0  # books not VALID at the end; non-zero means frames were skipped, figures invalid
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def levels_per_s(self) -> float:
        return self.levels / self.seconds if self.seconds > 0 else 0.0


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (the daemon runs on it), else None for asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------ flowgauge side


def _make_parser(venue: str, instruments: Sequence[Instrument]) -> tuple[Any, Any]:
    """(adapter, parser) for one connection carrying `instruments`, built the way the daemon builds it."""
    adapter = registry.adapter(venue)
    depth = 200 if venue == "bybit" else 1000
    connections = adapter.connections(list(instruments), adapter.default_ws_url, depth)
    # Binance splits books (/public) from the rest (/market): the book frames go to the parser carrying books.
    book_connections = [(url, p) for url, p in connections if getattr(p, "carries_books", True)]
    if len(book_connections) == 1:
        return adapter, book_connections[0][1]
    # Many instruments are spread over several sockets live; the bench feeds one stream, so it takes the
    # single parser replay uses for a whole category (same parsing code, no routing added).
    url = book_connections[0][0]
    parser = adapter.replay_parser(url, list(instruments)) if hasattr(adapter, "replay_parser") else None
    if parser is None:
        raise ValueError(f"{venue}: no single parser for {len(instruments)} instruments")
    return adapter, parser


class Pipeline:
    """flowgauge's path for one venue: the parser feeding books only, or the engine and its publishers.

    Args:
        venue: ccxt id ("bybit", "binanceusdm").
        instruments: the instruments the frames are about.
        full: False = parse + book only; True = the full path to the bus and the null publisher.
        after_publish: full path only: called after each payload reached both publishers (latency runs).
        families: full path only: the metric families published (metrics.families); `core-v1` by default.
    """

    def __init__(
        self,
        venue: str,
        instruments: Sequence[Instrument],
        *,
        full: bool,
        after_publish: Callable[[], None] | None = None,
        families: Sequence[str] = CORE_V1,
    ) -> None:
        adapter, self.parser = _make_parser(venue, instruments)
        rule = adapter.sequence_rule
        buffered = bool(adapter.buffer_deltas)
        self.full = full
        self.symbol_of = {i.venue_id: i.symbol for i in instruments}
        self.bad_frames = 0
        self.resyncs_requested = 0
        self.books: dict[str, BookSync] = {}
        self.bus: EmbeddedBus | None = None
        self.sub: Subscription[Message] | None = None
        self.null = NullPublisher()
        self.engine: Engine | None = None
        if full:
            self.bus = EmbeddedBus(port=None)
            self.sub = self.bus.subscribe("flowgauge.v1.>", maxsize=_SUB_QUEUE)
            bus_publish = self.bus.publish
            null_publish = self.null.publish

            def sink(topic: str, payload: bytes) -> None:
                bus_publish(topic, payload)
                null_publish(topic, payload)

            def timed_sink(topic: str, payload: bytes) -> None:
                bus_publish(topic, payload)
                null_publish(topic, payload)
                after_publish()  # type: ignore[misc]  # the latency run's publish timestamp

            self.engine = Engine(sink if after_publish is None else timed_sink, families=families)
            for instrument in instruments:
                if buffered:
                    self.engine.add_instrument(instrument, rule, buffer_deltas=True)
                else:
                    self.engine.add_instrument(instrument, rule)
        else:
            # The same book the engine would use: the active core's (C arrays when compiled).
            hot_core = core.active_core()
            self.books = {
                i.symbol: core.new_sync(hot_core, rule, buffered) for i in instruments
            }

    def events(self, item: Item, ts_recv: int) -> list[Any]:
        if isinstance(item, RestSnapshot):
            return list(self.parser.on_snapshot(self.symbol_of[item.venue_id], item.body, ts_recv))
        return list(self.parser.feed(item, ts_recv))

    def handle(self, item: Item, ts_recv: int) -> None:
        """Process one item completely (its payloads are on the bus when this returns)."""
        events = self.events(item, ts_recv)
        if self.engine is not None:
            handle = self.engine.handle
            for event in events:
                if handle(event) is not None:
                    self.resyncs_requested += 1
            return
        books = self.books
        for event in events:
            kind = type(event)
            if kind is BookDelta:
                books[event.symbol].on_delta(event)
            elif kind is BookSnapshot:
                books[event.symbol].on_snapshot(event)
            elif kind is BadFrame:
                self.bad_frames += 1

    def run(self, items: Iterable[Item]) -> float:
        """Process every item; returns the seconds it took (the subscriber drained every 64 items)."""
        handle = self.handle
        drain = self.drain
        clock = time.time_ns
        started = time.perf_counter()
        for n, item in enumerate(items, 1):
            handle(item, clock())
            if n % _DRAIN_EVERY == 0:
                drain()
        drain()
        return time.perf_counter() - started

    def drain(self) -> int:
        sub = self.sub
        if sub is None:
            return 0
        taken = 0
        get = sub.get_nowait
        while get() is not None:
            taken += 1
        return taken

    def invalid_books(self) -> int:
        if self.engine is not None:
            return sum(1 for state in self.engine.states() if not state.sync.valid)
        return sum(1 for sync in self.books.values() if not sync.valid)

    def figures(self, name: str, items: Sequence[Item], seconds: float) -> Run:
        return Run(
            name,
            frame_count(items),
            level_count(items),
            seconds,
            published=self.bus.published if self.bus is not None else 0,
            dropped=self.bus.dropped if self.bus is not None else 0,
            invalid_books=self.invalid_books(),
            extra={"bad_frames": self.bad_frames + (self.engine.bad_frames if self.engine else 0)},
        )


def measure_ours(
    name: str,
    venue: str,
    instruments: Sequence[Instrument],
    items: Sequence[Item],
    *,
    full: bool,
    warm: Sequence[Item] = (),
    families: Sequence[str] = CORE_V1,
) -> Run:
    """Time flowgauge's parse+book (`full=False`) or full path over `items` with fresh objects.

    `warm` items go through first, untimed (e.g. the synthetic snapshots before timing deltas); `families`: the
    metric families of the full path's payloads.
    """
    pipeline = Pipeline(venue, instruments, full=full, families=families)
    for item in warm:
        pipeline.handle(item, time.time_ns())
    pipeline.drain()
    gc.collect()
    seconds = pipeline.run(items)
    return pipeline.figures(name, items, seconds)


def measure_cryptofeed(name: str, recorded: RecordedFeed, items: Sequence[Item]) -> Run:
    """Time cryptofeed's own handler for `recorded.venue` over `items` with a fresh feed object."""
    from flowgauge.bench.cryptofeed_driver import make_driver

    driver = make_driver(recorded)
    gc.collect()
    seconds = driver.run(list(items), loop_factory())
    books = driver.feed._l2_book
    return Run(
        name,
        frame_count(items),
        level_count(items),
        seconds,
        invalid_books=len(recorded.instruments) - len(books),
        extra={"rest_reads": driver.rest_reads},
    )


# ------------------------------------------------------------------------------------ loopback websocket


def _serve_frames(pipe: multiprocessing.connection.Connection, count: int) -> None:
    """Child process: serve `count` recorded Bybit book frames to every client that connects, then close."""
    # A terminal's Ctrl-C reaches the whole process group: the parent reports and tears this child down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    items = [item for item in load_bybit().items(count) if isinstance(item, str)]

    async def main() -> None:
        from websockets.asyncio.server import ServerConnection, serve
        from websockets.exceptions import ConnectionClosed

        async def push(ws: ServerConnection) -> None:
            send = ws.send
            # A client that goes away mid-run (Ctrl-C, a failed round) ends this push quietly.
            with contextlib.suppress(ConnectionClosed):
                for frame in items:
                    await send(frame)
                await ws.close()

        async with serve(push, "127.0.0.1", 0, compression=None, max_size=1 << 20) as server:
            pipe.send(next(iter(server.sockets)).getsockname()[1])
            # Block (in a worker thread, so the loop keeps serving) until the parent says stop.
            await asyncio.to_thread(pipe.recv)

    factory = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


class FrameServer(ChildServer):
    """A child process pushing `count` recorded Bybit frames to each websocket client on 127.0.0.1.

    It runs in its own process so the client side is measured alone (the machine has two cores). Use as a
    context manager; `url` is valid inside it.
    """

    def __init__(self, count: int) -> None:
        super().__init__(_serve_frames, (count,), "bench-frame-server")
        self.count = count


async def _read_all(
    url: str, on_frame: Callable[..., Any], is_async: bool, daemon_transport: bool = False
) -> tuple[int, float]:
    """Read every frame the server sends; returns (frames, seconds from first frame to the close).

    `daemon_transport`: connect with the daemon's own connection class (arrival-stamped, as `Session` does)
    and call `on_frame(message, arrival_ns)`; otherwise a plain `websockets` client and `on_frame(message)`.
    """
    from websockets.asyncio.client import connect

    from flowgauge.connectors.arrivals import ArrivalStampedConnection

    frames = 0
    if daemon_transport:
        async with connect(
            url, compression=None, max_size=1 << 22, create_connection=ArrivalStampedConnection
        ) as stamped:
            assert isinstance(stamped, ArrivalStampedConnection)
            arrival_ns = stamped.arrival_ns
            first = await stamped.recv()
            started = time.perf_counter()
            on_frame(first, arrival_ns())
            frames = 1
            async for message in stamped:
                on_frame(message, arrival_ns())
                frames += 1
            return frames, time.perf_counter() - started
    async with connect(url, compression=None, max_size=1 << 22) as ws:
        first = await ws.recv()
        started = time.perf_counter()
        if is_async:
            await on_frame(first)  # type: ignore[arg-type]
            frames = 1
            async for message in ws:
                await on_frame(message)  # type: ignore[arg-type]
                frames += 1
        else:
            on_frame(first)  # type: ignore[arg-type]
            frames = 1
            async for message in ws:
                on_frame(message)  # type: ignore[arg-type]
                frames += 1
        seconds = time.perf_counter() - started
    return frames, seconds


def e2e_ours(url: str, recorded: RecordedFeed) -> Run:
    """Loopback websocket -> parse -> book -> metrics -> embedded bus, with a subscriber task draining it.

    The client is the daemon's: `websockets` with the arrival-stamped connection class `Session` uses, each
    frame's `ts_recv` being when its bytes arrived.
    """
    pipeline = Pipeline(recorded.venue, recorded.instruments, full=True)
    handle = pipeline.handle
    sub = pipeline.sub
    assert sub is not None

    def on_frame(message: str, ts_recv: int) -> None:
        handle(message, ts_recv)

    async def main() -> tuple[int, float, int]:
        async def consume() -> int:
            taken = 0
            async for _ in sub:
                taken += 1
            return taken

        async with asyncio.TaskGroup() as group:
            consumer = group.create_task(consume())
            try:
                frames, seconds = await _read_all(url, on_frame, is_async=False, daemon_transport=True)
            finally:
                sub.close()  # ends the consumer once it has taken what is buffered
        return frames, seconds, consumer.result()

    gc.collect()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        frames, seconds, consumed = runner.run(main())
    run = pipeline.figures("e2e_ours_bybit", [], seconds)
    run.messages = frames
    run.extra["consumed"] = consumed
    return run


def e2e_cryptofeed(url: str, recorded: RecordedFeed) -> Run:
    """Loopback websocket -> cryptofeed's Bybit message handler (no-op book callback)."""
    from flowgauge.bench.cryptofeed_driver import make_driver

    driver = make_driver(recorded)
    handler = driver.feed.message_handler
    conn = driver.conn

    async def on_frame(message: str) -> None:
        await handler(message, conn, time.time())

    gc.collect()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        frames, seconds = runner.run(_read_all(url, on_frame, is_async=True))
    return Run(
        "e2e_cryptofeed_bybit",
        frames,
        0,
        seconds,
        invalid_books=len(recorded.instruments) - len(driver.feed._l2_book),
    )


def e2e_transport(url: str) -> Run:
    """Loopback websocket, frames read and dropped: the transport's own ceiling on this machine."""

    def on_frame(message: str) -> None:
        return None

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        frames, seconds = runner.run(_read_all(url, on_frame, is_async=False))
    return Run("e2e_transport_only", frames, 0, seconds)


def picows_available() -> bool:
    """picows (a Cython websocket client, the candidate venue transport) is importable."""
    try:
        import picows  # noqa: F401
    except ImportError:
        return False
    return True


async def _read_all_picows(url: str, on_frame: Callable[[str], Any]) -> tuple[int, float]:
    """`_read_all` with picows as the client: every text frame goes to `on_frame` from its frame callback."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    state = {"frames": 0, "started": 0.0, "ended": 0.0}

    class Listener(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.TEXT:
                if state["frames"] == 0:
                    state["started"] = time.perf_counter()
                on_frame(frame.get_payload_as_utf8_text())
                state["frames"] += 1
            elif kind == WSMsgType.CLOSE:
                state["ended"] = time.perf_counter()
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    transport, _ = await ws_connect(Listener, url, max_frame_size=1 << 22)
    await transport.wait_disconnected()
    ended = state["ended"] or time.perf_counter()
    return int(state["frames"]), ended - state["started"]


def e2e_ours_picows(url: str, recorded: RecordedFeed) -> Run:
    """`e2e_ours` with picows reading the socket instead of `websockets` (same pipeline, same subscriber)."""
    pipeline = Pipeline(recorded.venue, recorded.instruments, full=True)
    handle = pipeline.handle
    clock = time.time_ns
    sub = pipeline.sub
    assert sub is not None

    def on_frame(message: str) -> None:
        handle(message, clock())

    async def main() -> tuple[int, float, int]:
        async def consume() -> int:
            taken = 0
            async for _ in sub:
                taken += 1
            return taken

        async with asyncio.TaskGroup() as group:
            consumer = group.create_task(consume())
            try:
                frames, seconds = await _read_all_picows(url, on_frame)
            finally:
                sub.close()
        return frames, seconds, consumer.result()

    gc.collect()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        frames, seconds, consumed = runner.run(main())
    run = pipeline.figures("e2e_ours_picows_bybit", [], seconds)
    run.messages = frames
    run.extra["consumed"] = consumed
    return run


def e2e_transport_picows(url: str) -> Run:
    """picows reading and dropping every frame: its own ceiling here, beside `e2e_transport`'s."""

    def on_frame(message: str) -> None:
        return None

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        frames, seconds = runner.run(_read_all_picows(url, on_frame))
    return Run("e2e_transport_picows", frames, 0, seconds)


# ------------------------------------------------------------------------------------ child processes


def _rss_mb() -> float:
    """This process's resident set size in MiB (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_child(
    pipe: multiprocessing.connection.Connection, instruments: int, levels: int, deltas: int
) -> None:
    """Child process: `instruments` books of `levels` levels through the full path; report RSS."""
    baseline = _rss_mb()
    stream = SyntheticStream(instruments, levels)
    pipeline = Pipeline("bybit", stream.instruments, full=True)
    # Frames are generated one at a time and dropped, so what stays resident is the daemon's own state.
    for index in range(instruments):
        pipeline.handle(stream.snapshot(index), time.time_ns())
        pipeline.drain()
    for n, frame in enumerate(stream.iter_deltas(deltas)):
        pipeline.handle(frame, time.time_ns())
        if n % _DRAIN_EVERY == 0:
            pipeline.drain()
    pipeline.drain()
    del stream
    gc.collect()
    assert pipeline.engine is not None  # built when the pipeline was
    levels_held = sum(len(s.sync.book.bids) + len(s.sync.book.asks) for s in pipeline.engine.states())
    pipe.send(
        {
            "rss_mb": _rss_mb(),
            "baseline_mb": baseline,
            "instruments": instruments,
            "levels_per_side": levels,
            "levels_held": levels_held,
            "invalid_books": pipeline.invalid_books(),
        }
    )
    pipe.close()


def rss(instruments: int = 500, levels: int = 200, deltas: int = 5000) -> dict[str, Any]:
    """RSS of a fresh process holding `instruments` books of `levels` levels per side, full path wired."""
    return _in_child(_rss_child, instruments, levels, deltas)


def _with_core(core_name: str, target: Callable[..., None], *args: Any) -> None:
    """A spawned child's entry: run the parent's hot core (a fresh interpreter would take the default)."""
    core.select(core_name)
    target(*args)


def _in_child(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    parent, child = SPAWN.Pipe()
    process = SPAWN.Process(target=_with_core, args=(core.active_core(), target, child, *args), daemon=True)
    process.start()
    child.close()
    try:
        if not parent.poll(_CHILD_TIMEOUT_S):
            raise RuntimeError(f"{target.__name__} child produced nothing in {_CHILD_TIMEOUT_S:.0f}s")
        result: dict[str, Any] = parent.recv()
        return result
    finally:
        parent.close()
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join(5)


def _shard_child(
    pipe: multiprocessing.connection.Connection,
    shard: int,
    shards: int,
    instruments: int,
    count: int,
    repeats: int,
    barrier: Any,
) -> None:
    """Child process: the full path over this shard's instruments of one shared synthetic stream."""
    stream = SyntheticStream(instruments)
    mine = range(shard, instruments, shards)
    snapshots = [stream.snapshot(i) for i in mine]
    # The same seed in every child gives the same stream; each keeps only its instruments' frames.
    frames = [text for index, text in stream.indexed_deltas(count) if index % shards == shard]
    members = [stream.instruments[i] for i in mine]
    results = []
    for _ in range(repeats):
        pipeline = Pipeline("bybit", members, full=True)
        for snapshot in snapshots:
            pipeline.handle(snapshot, time.time_ns())
        pipeline.drain()
        gc.collect()
        barrier.wait(_CHILD_TIMEOUT_S)
        started = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes on one machine
        pipeline.run(frames)
        results.append((len(frames), started, time.monotonic(), pipeline.invalid_books()))
    pipe.send(results)
    pipe.close()


def scale_out(processes: int, instruments: int, count: int, repeats: int) -> list[dict[str, Any]]:
    """`processes` children, each running the full path on its shard of one stream, started together.

    Returns one dict per repeat: aggregate msgs/s (all messages / first start to last end) and per process.
    """
    barrier = SPAWN.Barrier(processes)
    pipes = []
    children = []
    for shard in range(processes):
        parent, child = SPAWN.Pipe()
        process = SPAWN.Process(
            target=_with_core,
            args=(core.active_core(), _shard_child, child, shard, processes, instruments, count, repeats, barrier),
            name=f"bench-shard-{shard}",
            daemon=True,
        )
        process.start()
        child.close()
        pipes.append(parent)
        children.append(process)
    try:
        per_child = []
        for parent in pipes:
            if not parent.poll(_CHILD_TIMEOUT_S * max(1, repeats)):
                raise RuntimeError("a scale-out child produced nothing")
            per_child.append(parent.recv())
    finally:
        for parent in pipes:
            parent.close()
        for process in children:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
    out = []
    for r in range(repeats):
        rows = [results[r] for results in per_child]
        messages = sum(row[0] for row in rows)
        span = max(row[2] for row in rows) - min(row[1] for row in rows)
        out.append(
            {
                "processes": processes,
                "messages": messages,
                "msgs_per_s": messages / span if span > 0 else 0.0,
                "per_process_msgs_per_s": [row[0] / (row[2] - row[1]) for row in rows],
                "invalid_books": sum(row[3] for row in rows),
            }
        )
    return out


# ------------------------------------------------------------------------------------ profile


def profile_full_path(items: Sequence[Item], recorded: RecordedFeed, top: int = 25) -> str:
    """cProfile of the full path over `items`; returns the stats table sorted by own time."""
    import cProfile
    import io
    import pstats

    pipeline = Pipeline(recorded.venue, recorded.instruments, full=True)
    profiler = cProfile.Profile()
    profiler.enable()
    pipeline.run(items)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue().replace(os.getcwd() + os.sep, "")
