"""Latency as a venue would see it: a feeder in its own process sends book frames at a fixed rate over a
loopback websocket, each stamped with its send time; the pipeline in the bench process times each publish.

Sits under `flowgauge.bench` beside `bench.paths` (which owns the pipeline wiring it reuses). The daemon never
imports it. It must not time anything but the path a live frame takes: socket read -> parse -> book ->
metrics -> encode -> publish, plus whatever time a frame spends queued behind the frames before it (in the
feeder's socket buffer, the kernel, the client's receive buffer or the event loop), which is the point.

Definitions (the README's Performance section says the same):
* "receive" = the feeder's send timestamp (`time.time_ns()` just before the frame is handed to its socket),
  embedded as the frame's last key `"sent_ns"`; both processes read the same CLOCK_REALTIME.
* "publish" = `time.time_ns()` when the engine hands the frame's last payload to the publishers.
* The pacing is open-loop: frames due while the feeder was busy go out back to back, each stamped when sent;
  `feeder_behind_p99_us` says how far behind its schedule the feeder itself ran (a late feeder means the
  offered rate was not the nominal one, which the summary shows as `achieved_rate`).

Frames are the synthetic Bybit stream with the recordings' level count (`RECORDED_CHANGES_PER_SIDE`, about
14 levels per frame) over `instruments` books of `levels` levels.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing.connection
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from flowgauge.bench.child import ChildServer
from flowgauge.bench.synthetic import RECORDED_CHANGES_PER_SIDE, SyntheticStream
from flowgauge.connectors.arrivals import ArrivalStampedConnection
from flowgauge.connectors.session import SessionSettings

SESSION_DEFAULTS = SessionSettings()

__all__ = ["Feeder", "LatencyRequest", "instruments_per_core", "measure_latency", "percentile"]

_READY = "ready"


@dataclass(frozen=True, slots=True)
class LatencyRequest:
    """What the client asks the feeder for: `rate` frames/s for `seconds` over `instruments` books."""

    rate: float
    instruments: int
    seconds: float
    levels: int = 200
    seed: int = 11

    @property
    def count(self) -> int:
        return max(1, int(self.rate * self.seconds))


def percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not ordered:
        return 0
    rank = max(1, -(-int(q * len(ordered) * 1_000_000) // 1_000_000))  # ceil(q * n) without float drift
    return ordered[min(rank, len(ordered)) - 1]


# ---------------------------------------------------------------------------------------------- feeder


def _frames_for(request: dict[str, Any], cache: dict[tuple[Any, ...], tuple[list[str], list[str]]]) -> Any:
    key = (request["instruments"], request["levels"], request["count"], request["seed"])
    if key not in cache:
        cache.clear()  # one stream at a time: bounded memory in the feeder
        stream = SyntheticStream(
            request["instruments"],
            request["levels"],
            seed=request["seed"],
            changes_per_side=RECORDED_CHANGES_PER_SIDE,
        )
        snapshots = stream.snapshots()
        # Without the closing brace: the send timestamp is appended as the frame's last key at send time.
        deltas = [text[:-1] for text in stream.deltas(request["count"])]
        cache[key] = (snapshots, deltas)
    return cache[key]


def _feed(pipe: multiprocessing.connection.Connection) -> None:
    """Child process: serve paced, timestamped frames to each client that connects, one client at a time."""
    # A terminal's Ctrl-C reaches the whole process group: the parent reports and tears this child down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cache: dict[tuple[Any, ...], tuple[list[str], list[str]]] = {}

    async def main() -> None:
        from websockets.asyncio.server import ServerConnection, serve
        from websockets.exceptions import ConnectionClosed

        async def session(ws: ServerConnection) -> None:
            # The measuring side may go away mid-run (Ctrl-C, a failed round): that ends this session quietly.
            with contextlib.suppress(ConnectionClosed):
                await _serve_session(ws)

        async def _serve_session(ws: ServerConnection) -> None:
            request = orjson.loads(await ws.recv())
            snapshots, deltas = _frames_for(request, cache)
            for text in snapshots:
                await ws.send(text)
            if await ws.recv() != _READY:
                return
            period_ns = int(1e9 / request["rate"])
            perf = time.perf_counter_ns
            wall = time.time_ns
            send = ws.send
            behind = [0] * len(deltas)
            start = perf() + 2_000_000
            i, n = 0, len(deltas)
            while i < n:
                now = perf()
                due = start + i * period_ns
                if due > now:
                    await asyncio.sleep((due - now) / 1e9)
                    continue
                # Everything due by now goes out back to back, each stamped as it is sent.
                while i < n and start + i * period_ns <= now:
                    behind[i] = perf() - (start + i * period_ns)
                    await send(f'{deltas[i]},"sent_ns":{wall()}}}')
                    i += 1
                    if i % 16 == 0:
                        now = perf()
            elapsed = (perf() - start) / 1e9
            behind.sort()
            await ws.send(
                orjson.dumps(
                    {"end": True, "elapsed_s": elapsed, "behind_p99_ns": percentile(behind, 0.99)}
                ).decode()
            )
            await ws.close()

        async with serve(session, "127.0.0.1", 0, compression=None, max_size=1 << 20) as server:
            pipe.send(next(iter(server.sockets)).getsockname()[1])
            await asyncio.to_thread(pipe.recv)  # until the parent says stop

    from flowgauge.bench.paths import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())


class Feeder(ChildServer):
    """The feeder child process; a context manager whose `url` is valid inside it."""

    def __init__(self) -> None:
        super().__init__(_feed, (), "bench-feeder")


# ---------------------------------------------------------------------------------------------- client


def measure_latency(url: str, request: LatencyRequest) -> dict[str, Any]:
    """Receive `request`'s frames from the feeder at `url` through the full path; per-frame latencies.

    Returns receive -> publish percentiles (the headline), the old handle-only percentiles (`p99_us`:
    parse to publish of one frame, no waiting), the daemon-side CPU share, and the run's counts.
    """
    from websockets.asyncio.client import connect

    from flowgauge.bench.paths import Pipeline, loop_factory
    from flowgauge.bench.synthetic import synthetic_instruments

    published_at = [0, 0]  # [time of the last publish, publishes so far]
    wall = time.time_ns

    def after_publish() -> None:
        published_at[0] = wall()
        published_at[1] += 1

    pipeline = Pipeline(
        "bybit", synthetic_instruments(request.instruments), full=True, after_publish=after_publish
    )
    sub = pipeline.sub
    assert sub is not None
    count = request.count
    recv_to_publish = [0] * count
    handle_ns = [0] * count

    async def read(ws: Any) -> tuple[int, int, tuple[float, float], dict[str, Any]]:
        await ws.send(
            orjson.dumps(
                {
                    "rate": request.rate,
                    "instruments": request.instruments,
                    "levels": request.levels,
                    "count": count,
                    "seed": request.seed,
                }
            ).decode()
        )
        for _ in range(request.instruments):
            pipeline.handle(await ws.recv(), wall())
        pipeline.drain()
        gc.collect()
        handle = pipeline.handle
        arrival_ns = ws.arrival_ns
        perf = time.perf_counter_ns
        unpublished = 0
        i = 0
        cpu_started = time.process_time()
        wall_started = time.perf_counter()
        await ws.send(_READY)
        end: dict[str, Any] = {}
        async for raw in ws:
            if i >= count:
                end = orjson.loads(raw)
                break
            t0 = perf()
            before = published_at[1]
            handle(raw, arrival_ns())  # ts_recv as the daemon takes it: when the bytes arrived
            handle_ns[i] = perf() - t0
            if published_at[1] == before:
                unpublished += 1
            sent = int(raw[raw.rindex(":") + 1 : -1])  # type: ignore[arg-type]
            recv_to_publish[i] = published_at[0] - sent
            i += 1
        cpu = time.process_time() - cpu_started
        return i, unpublished, (cpu, time.perf_counter() - wall_started), end

    async def main() -> tuple[tuple[int, int, tuple[float, float], dict[str, Any]], int]:
        async def consume() -> int:
            taken = 0
            async for _ in sub:
                taken += 1
            return taken

        async with asyncio.TaskGroup() as group:
            consumer = group.create_task(consume())
            try:
                # The daemon's own transport (Session's connection class and limits): a backlog beyond its
                # bounded queue pushes back on the feeder over TCP, shown as `feeder_behind_p99_us`.
                async with connect(
                    url,
                    compression=None,
                    max_size=SESSION_DEFAULTS.max_frame_bytes,
                    max_queue=SESSION_DEFAULTS.max_queue_frames,
                    create_connection=ArrivalStampedConnection,  # the daemon's connection class
                ) as ws:
                    result = await read(ws)
            finally:
                sub.close()
        return result, consumer.result()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        (received, unpublished, (cpu_seconds, client_seconds), end), consumed = runner.run(main())
    r2p = sorted(recv_to_publish[:received])
    handled = sorted(handle_ns[:received])
    elapsed = float(end.get("elapsed_s", 0.0))
    return {
        "rate": request.rate,
        "instruments": request.instruments,
        "levels": request.levels,
        "messages": received,
        "achieved_rate": received / elapsed if elapsed > 0 else 0.0,
        "recv_to_publish_p50_us": percentile(r2p, 0.50) / 1000,
        "recv_to_publish_p99_us": percentile(r2p, 0.99) / 1000,
        "recv_to_publish_p999_us": percentile(r2p, 0.999) / 1000,
        "recv_to_publish_max_us": (r2p[-1] / 1000) if r2p else 0.0,
        "p50_us": percentile(handled, 0.50) / 1000,
        "p99_us": percentile(handled, 0.99) / 1000,
        "p999_us": percentile(handled, 0.999) / 1000,
        "max_us": (handled[-1] / 1000) if handled else 0.0,
        "feeder_behind_p99_us": int(end.get("behind_p99_ns", 0)) / 1000,
        # CPU this process spent on the run, as a share of its wall time; and the share the nominal
        # rate needs (CPU per message x rate), which a starved process on a loaded machine cannot show as
        # a share (it gets less CPU than it needs and falls behind instead).
        "cpu_share": cpu_seconds / client_seconds if client_seconds > 0 else 0.0,
        "cpu_needed": cpu_seconds / received * request.rate if received else 0.0,
        "unpublished": unpublished,
        "consumed": consumed,
        "dropped": pipeline.bus.dropped if pipeline.bus is not None else 0,
        "invalid_books": pipeline.invalid_books(),
    }


def instruments_per_core(
    url: str,
    *,
    hz: float = 20.0,
    levels: int = 200,
    seconds: float = 3.0,
    cpu_limit: float = 0.8,
    p99_limit_us: float = 250.0,
    start: int = 25,
    ceiling: int = 6400,
    refine_steps: int = 2,
) -> dict[str, Any]:
    """The most `levels`-level books, each updated `hz` times a second, this process keeps up with: daemon-side
    CPU <= `cpu_limit` of a core and receive -> publish p99 < `p99_limit_us`. The CPU is the run's CPU per
    message times the offered rate (`cpu_needed`), so a process starved by a loaded machine is not taken
    for one with CPU to spare.

    Doubles the book count from `start` while the CPU condition holds (up to `ceiling`), then bisects
    `refine_steps` times between the last run passing both conditions and the next one. Returns the answer
    (`instruments`, 0 when even `start` fails), the CPU-only bound (`instruments_cpu_only`: what the answer
    would be if the latency condition held; on a loaded machine that one fails first) and every trial.
    """
    trials: list[dict[str, Any]] = []

    def trial(books: int) -> tuple[bool, bool]:
        result = measure_latency(url, LatencyRequest(hz * books, books, seconds, levels))
        cpu_ok = result["cpu_needed"] <= cpu_limit
        p99_ok = result["recv_to_publish_p99_us"] < p99_limit_us
        trials.append(
            {
                "books": books,
                "rate": hz * books,
                "cpu_needed": round(result["cpu_needed"], 3),
                "recv_to_publish_p99_us": result["recv_to_publish_p99_us"],
                "achieved_rate": round(result["achieved_rate"], 1),
                "invalid_books": result["invalid_books"],
                "passed": cpu_ok and p99_ok,
            }
        )
        return cpu_ok, p99_ok

    best = cpu_best = 0
    first_fail: int | None = None
    books = start
    while books <= ceiling:
        cpu_ok, p99_ok = trial(books)
        if not cpu_ok:
            first_fail = books if first_fail is None else first_fail
            break
        cpu_best = books
        if p99_ok and first_fail is None:
            best = books
        elif first_fail is None:
            first_fail = books
        books *= 2
    if first_fail is not None and best > 0:
        low, high = best, first_fail
        for _ in range(refine_steps):
            middle = (low + high) // 2
            if middle in (low, high):
                break
            if all(trial(middle)):
                low = middle
            else:
                high = middle
        best = low
    return {
        "instruments": best,
        "instruments_cpu_only": cpu_best,
        "hz": hz,
        "levels": levels,
        "cpu_limit": cpu_limit,
        "p99_limit_us": p99_limit_us,
        "capped": first_fail is None,
        "trials": trials,
    }
