"""Bus and subscriber faults against the running daemon (issue 10 item 4): the engine keeps processing and a
healthy subscriber keeps getting every payload, on time, while other clients misbehave or a broker restarts.

One daemon (`flowgauge run`, the Bybit simulator at `--speed 20`, ~400 payloads/s) serves the embedded-bus
tests; the broker test has its own daemon publishing to a nats-server and a redis-server the test starts. The
healthy subscriber is the SDK (`flowgauge.subscribe`) reading everything. Per fault the test checks:

* delivery: every metric payload the engine published during the fault reached the healthy subscriber (its
  per-instrument `seq` has no hole) and none came late: the largest gap between two consecutive deliveries
  stays under `MAX_GAP_S` and the p99 latency (`ts_publish` to arrival) under `MAX_P99_LATENCY_S`; baseline
  p99 figures on this 2-core machine are ~9 ms and ~4 ms (README "Bus and subscriber faults"), so the bounds
  hold on a loaded machine and still catch the loop being held for a large fraction of a second;
* the engine: books processed per second during the fault stay above `MIN_RATE_RATIO` of the rate measured
  just before it (`/status`: the books' `published` counters, which are not cached);
* the protection: the refusal or disconnect it makes is counted under the expected reason.

What tests/integration/test_bus_hardening.py proves against a bare `EmbeddedBus` (each limit, in isolation)
is not repeated here; these tests put the faults in front of the real daemon and its engine.

Checked to fail with the protection removed (in a copy of the tree): without the lag and byte bounds the
never-reading clients are not cut off within 15 s; without the control rate limit and with patterns compiled
before the limits, the flood held the healthy subscriber's deliveries 2.4 s (p99 latency 2.9 s; it was then
cut off as slow_lag and missed payloads); with the outbox unbounded no drop is counted while the brokers are
down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.brokers import nats_server, redis_server, subscribe_live, wait_for_port
from tests.conftest import BYBIT_RECORDING
from tests.procs import flowgauge, free_port, http_get, wait_for, write_config
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import flowgauge as sdk

pytestmark = pytest.mark.integration

PATTERN = "flowgauge.v1.>"
METRIC_TOPICS = ("flowgauge.v1.bybit.BTC-USDT-USDT", "flowgauge.v1.bybit.ETH-USDT-USDT")
FAULT_S = 4.0  # how long each fault runs
BASELINE_S = 2.0
# Largest pause in the healthy subscriber's deliveries: baseline max 23-70 ms, under faults up to 0.46 s once (the
# bench's 500 reconnects/s); with the flood guard removed it was 2.4 s.
MAX_GAP_S = 1.0
MAX_P99_LATENCY_S = 0.25  # publish -> delivered, p99 (baseline ~4 ms, under faults <= 46 ms; unguarded flood 2.9 s)
MIN_RATE_RATIO = 0.5  # engine payloads/s during a fault over the rate just before it
MAX_STATUS_S = 10.0


# ---------------------------------------------------------------------------------------------------- helpers


@dataclass
class Daemon:
    bus_port: int
    http_port: int
    log: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.bus_port}/"


async def _status(daemon: Daemon) -> dict[str, Any]:
    code, body = await http_get(daemon.http_port, "/status")
    assert code == 200, body
    return dict(orjson.loads(body))


async def _engine_published(daemon: Daemon) -> int:
    """Payloads the engine published so far, every book together (`/status`, rendered per request)."""
    status = await _status(daemon)
    return sum(book["published"] for books in status["venues"].values() for book in books.values())


async def _metrics(daemon: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, text = await http_get(daemon.http_port, "/metrics")
    assert code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _counter(daemon: Daemon, name: str, **labels: str) -> float:
    """Sum of a counter's series with these labels (note: /metrics is rendered at most once a second)."""
    samples = await _metrics(daemon)
    return sum(
        v
        for (n, lab), v in samples.items()
        if n == name and all(dict(lab).get(k) == want for k, want in labels.items())
    )


@dataclass
class Healthy:
    """The SDK reading everything as fast as it comes; keeps what the bounds are checked on."""

    sub: Any
    arrivals: list[float] = field(default_factory=list)  # monotonic, live messages
    latencies: list[float] = field(default_factory=list)  # seconds, ts_publish -> arrival
    last_seq: dict[str, int] = field(default_factory=dict)
    holes: list[tuple[str, int, int]] = field(default_factory=list)  # (topic, expected seq, got)
    interruptions: int = 0
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async for message in self.sub:
            wall, now = time.time_ns(), time.monotonic()
            if isinstance(message, sdk.Interrupted):
                self.interruptions += 1
                continue
            if message.snapshot:
                continue
            self.arrivals.append(now)
            ts = message.ts_publish
            if ts is not None:
                self.latencies.append((wall - ts) / 1e9)
            if message.topic in METRIC_TOPICS:
                seq = int(message.payload["seq"])
                last = self.last_seq.get(message.topic)
                if last is not None and seq != last + 1:
                    self.holes.append((message.topic, last + 1, seq))
                self.last_seq[message.topic] = seq

    def mark(self) -> int:
        return len(self.arrivals)

    def window(self, since: int) -> tuple[int, float, float]:
        """(messages, largest gap s, p99 latency s) of what arrived after `mark()` returned `since`."""
        arrivals = self.arrivals[max(0, since - 1) :]
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        latencies = sorted(self.latencies[since:])
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("inf")
        return len(self.arrivals) - since, max(gaps, default=float("inf")), p99


@contextlib.asynccontextmanager
async def _healthy(daemon: Daemon) -> AsyncIterator[Healthy]:
    async with sdk.subscribe(daemon.ws_url, PATTERN, stale_after_s=3600.0) as sub:
        healthy = Healthy(sub)
        healthy.task = asyncio.ensure_future(healthy.run())
        try:
            await wait_for(lambda: len(healthy.arrivals) >= 50, "the healthy subscriber receiving payloads")
            yield healthy
        finally:
            healthy.task.cancel()
            await asyncio.wait([healthy.task])


async def _under_fault(daemon: Daemon, healthy: Healthy, fault: Any, fault_s: float = FAULT_S) -> dict[str, float]:
    """Measure the engine's rate for BASELINE_S, then run `fault(stop)` for `fault_s` while measuring again;
    assert the delivery and rate bounds; return the figures."""
    loop = asyncio.get_running_loop()
    before, t0 = await _engine_published(daemon), loop.time()
    await asyncio.sleep(BASELINE_S)  # the baseline window's length
    at_fault, t1 = await _engine_published(daemon), loop.time()
    baseline_rate = (at_fault - before) / (t1 - t0)
    mark = healthy.mark()
    stop = asyncio.Event()
    actor = asyncio.ensure_future(fault(stop))
    await asyncio.sleep(fault_s)  # the fault's length
    stop.set()
    after, t2 = await _engine_published(daemon), loop.time()
    stats = await actor
    fault_rate = (after - at_fault) / (t2 - t1)
    # Everything the engine published during the fault reaches the healthy subscriber (bounded wait): the
    # books' `published` is their latest `seq`, and the seqs arrived without a hole.
    await wait_for(
        lambda: sum(healthy.last_seq.get(t, 0) for t in METRIC_TOPICS) >= after,
        "the healthy subscriber catching up",
        10,
    )
    delivered, max_gap, p99 = healthy.window(mark)
    figures = {
        "baseline_rate": baseline_rate,
        "fault_rate": fault_rate,
        "delivered": float(delivered),
        "max_gap_s": max_gap,
        "p99_latency_s": p99,
        **stats,
    }
    print(figures)  # with -s: what this run measured
    assert healthy.holes == [], (healthy.holes[:5], figures)
    assert healthy.interruptions == 0, figures
    assert baseline_rate > 50, figures  # the stack is running at all
    assert fault_rate >= MIN_RATE_RATIO * baseline_rate, figures
    assert delivered >= MIN_RATE_RATIO * baseline_rate * fault_s, figures
    assert max_gap < MAX_GAP_S, figures
    assert p99 < MAX_P99_LATENCY_S, figures
    return figures


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The simulator and the daemon, shared by the embedded-bus fault tests (each measures its own deltas).

    The never-reading bound is tightened (client_max_lag_s 1 s) so it acts within a test's seconds; the default
    (10 s) behaves the same, later (measured by flowgauge.bench.bus_faults).
    """
    tmp = tmp_path_factory.mktemp("bus-faults")
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    config = write_config(tmp / "cfg.yaml", sim_port, bus_port, http_port)
    data = yaml.safe_load(config.read_text())
    data["bus"]["embedded"].update({"client_max_lag_s": 1.0})
    config.write_text(yaml.safe_dump(data))
    sim_args = [
        "simulate",
        "--venue",
        "bybit",
        "--recording",
        str(BYBIT_RECORDING),
        "--port",
        str(sim_port),
        "--speed",
        "20",
    ]
    with (
        flowgauge(sim_args, tmp / "sim.log"),
        flowgauge(["run", "-c", str(config)], tmp / "daemon.log") as proc,
    ):
        for port in (http_port, bus_port):
            wait_for_port(port, proc, tmp / "daemon.log")
        yield Daemon(bus_port, http_port, tmp / "daemon.log")
        assert proc.poll() is None, (tmp / "daemon.log").read_text()[-3000:]


def _small_rcvbuf_socket(port: int) -> socket.socket:
    """A connected TCP socket with a 4 KiB receive buffer: a client that stops reading backs the server up
    after a few KB instead of the megabytes loopback autotuning would otherwise absorb."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


# --------------------------------------------------------------------------------------- embedded-bus faults


async def test_never_reading_subscribers_are_cut_off_and_the_healthy_one_misses_nothing(daemon: Daemon) -> None:
    """20 clients subscribe to everything and never read again: within the fault each is disconnected by the
    lag bound (`slow_lag`, 1 s here; or `slow_bytes`) and counted, and the healthy subscriber loses nothing."""
    n = 20

    async def cut_off() -> float:
        return await _counter(daemon, "flowgauge_fanout_disconnects_total", reason="slow_lag") + await _counter(
            daemon, "flowgauge_fanout_disconnects_total", reason="slow_bytes"
        )

    cut_before = await cut_off()

    async def never_read(stop: asyncio.Event) -> dict[str, float]:
        stalled = []
        started = asyncio.get_running_loop().time()
        for _ in range(n):
            ws = await connect(
                daemon.ws_url, sock=_small_rcvbuf_socket(daemon.bus_port), max_queue=1, close_timeout=0.5
            )
            await ws.send(orjson.dumps({"op": "subscribe", "patterns": [PATTERN]}).decode())
            stalled.append(ws)

        async def all_cut() -> bool:
            return await cut_off() - cut_before >= n

        try:
            await wait_for(all_cut, f"{n} never-reading clients cut off by the lag/byte bound", 15)
            cut_after_s = asyncio.get_running_loop().time() - started
            await stop.wait()
        finally:
            for ws in stalled:
                ws.transport.abort()
        return {"stalled": float(n), "cut_after_s": cut_after_s}

    async with _healthy(daemon) as healthy:
        figures = await _under_fault(daemon, healthy, never_read, fault_s=8.0)
    # Measured 4-7 s: the kernel's socket buffers (the server side's grow to megabytes) fill at ~450 KB/s first,
    # then the lag bound (1 s) runs, then /metrics' 1 s cache. Without the lag and byte bounds the message bound
    # alone (10,000 queued, then 10,000 overflows in a row) would take about a minute.
    assert figures["cut_after_s"] < 12.0, figures


async def test_subscribers_reconnecting_in_a_loop_leak_nothing_and_slow_no_one(daemon: Daemon) -> None:
    """4 clients connect, subscribe to everything (current values, then live), read 5 frames and leave, in a
    loop: the healthy subscriber loses nothing, every churned connection is counted as a client disconnect and
    the client gauge comes back to the healthy subscriber alone."""
    disconnects_before = await _counter(daemon, "flowgauge_fanout_disconnects_total", reason="client")

    async def churn(stop: asyncio.Event) -> dict[str, float]:
        cycles = 0

        async def worker() -> None:
            nonlocal cycles
            while not stop.is_set():
                # max_queue=None: the client library never pauses reading, so its close() is not stuck behind
                # live frames it stopped consuming (websockets would then wait close_timeout, 10 s, for the reply).
                async with connect(daemon.ws_url, max_size=2**22, max_queue=None) as ws:
                    await ws.send(orjson.dumps({"op": "subscribe", "patterns": [PATTERN]}).decode())
                    async with asyncio.timeout(5):
                        for _ in range(5):
                            await ws.recv()
                cycles += 1

        await asyncio.gather(*(worker() for _ in range(4)))
        return {"cycles": float(cycles)}

    async with _healthy(daemon) as healthy:
        figures = await _under_fault(daemon, healthy, churn)
        assert figures["cycles"] >= 100, figures  # the fault happened at scale (1,000-2,000 in 4 s here)

        async def settled() -> bool:
            samples = await _metrics(daemon)
            clients = samples.get(("flowgauge_fanout_clients", ()), -1)
            closed = sum(
                v
                for (n, lab), v in samples.items()
                if n == "flowgauge_fanout_disconnects_total" and dict(lab).get("reason") == "client"
            )
            return clients == 1 and closed - disconnects_before >= figures["cycles"]

        await wait_for(settled, "every churned client gone and counted", MAX_STATUS_S)


async def test_a_flood_of_costly_subscribe_requests_is_refused_cheaply(daemon: Daemon) -> None:
    """4 clients send, as fast as they are answered, 64 KiB subscribe requests of 240 long wildcard patterns,
    each unique (the kind that held the loop ~200 ms per request when patterns were compiled before the
    limits were checked): each is refused (rate limit or pattern limit) and counted, and nobody else waits."""
    refused_before = await _counter(
        daemon, "flowgauge_fanout_control_rejected_total", reason="rate_limited"
    ) + await _counter(daemon, "flowgauge_fanout_control_rejected_total", reason="limit")

    async def flood(stop: asyncio.Event) -> dict[str, float]:
        sent = refused = 0

        async def worker(n: int) -> None:
            nonlocal sent, refused
            async with connect(daemon.ws_url, max_size=2**22) as ws:
                k = 0
                while not stop.is_set():
                    patterns = [".".join(["*"] * 124 + [f"x{i}c{n}r{k}"]) for i in range(240)]
                    await ws.send(orjson.dumps({"op": "subscribe", "patterns": patterns}).decode())
                    async with asyncio.timeout(5):
                        reply = orjson.loads(await ws.recv())
                    sent += 1
                    refused += reply.get("op") == "error"
                    k += 1

        await asyncio.gather(*(worker(n) for n in range(4)))
        return {"requests": float(sent), "refused": float(refused)}

    async with _healthy(daemon) as healthy:
        figures = await _under_fault(daemon, healthy, flood)
    assert figures["requests"] >= 100 and figures["refused"] == figures["requests"], figures

    async def counted() -> bool:
        now = await _counter(daemon, "flowgauge_fanout_control_rejected_total", reason="rate_limited") + await _counter(
            daemon, "flowgauge_fanout_control_rejected_total", reason="limit"
        )
        return now - refused_before >= figures["refused"]

    await wait_for(counted, "every refused request counted", MAX_STATUS_S)


async def test_oversized_client_frames_are_closed_1009_and_counted(daemon: Daemon) -> None:
    """4 clients connect and send a 1 MiB text frame, in a loop: each connection is closed with 1009 and
    counted (`control_rejected{reason=limit}`), and the healthy subscriber loses nothing."""
    limit_before = await _counter(daemon, "flowgauge_fanout_control_rejected_total", reason="limit")

    async def oversized(stop: asyncio.Event) -> dict[str, float]:
        frame = "x" * (1 << 20)
        closed_1009 = reset = other = 0

        async def worker() -> None:
            nonlocal closed_1009, reset, other
            while not stop.is_set():
                async with connect(daemon.ws_url) as ws:
                    try:
                        await ws.send(frame)
                        async with asyncio.timeout(5):
                            await ws.recv()
                        other += 1  # the frame was taken as a control message
                    except ConnectionClosed as exc:
                        if exc.rcvd is not None and exc.rcvd.code == 1009:
                            closed_1009 += 1
                        elif exc.rcvd is None:
                            # The daemon closed while this client was still writing the frame: its kernel may
                            # answer the rest with a reset, which discards the unread close frame here.
                            reset += 1
                        else:
                            other += 1

        await asyncio.gather(*(worker() for _ in range(4)))
        return {"closed_1009": float(closed_1009), "reset": float(reset), "other": float(other)}

    async with _healthy(daemon) as healthy:
        figures = await _under_fault(daemon, healthy, oversized)
    assert figures["closed_1009"] >= 20 and figures["other"] == 0, figures
    assert figures["reset"] <= figures["closed_1009"], figures

    async def counted() -> bool:
        now = await _counter(daemon, "flowgauge_fanout_control_rejected_total", reason="limit")
        return now - limit_before >= figures["closed_1009"] + figures["reset"]

    await wait_for(counted, "every oversized frame counted", MAX_STATUS_S)


# ---------------------------------------------------------------------------------------------- broker restarts


async def test_broker_restarts_block_nothing_drops_are_counted_and_publishing_resumes(tmp_path: Path) -> None:
    """The nats-server and the redis-server both stop for ~3 s and start again on their ports. Meanwhile the
    engine keeps processing and the embedded bus keeps delivering (the same bounds as above); each broker
    publisher's outbox (200 payloads here) overflows and drops are counted per backend; after the restart
    both publish again by themselves."""
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    with nats_server(tmp_path) as nserver, redis_server(tmp_path) as rserver:
        config = write_config(tmp_path / "cfg.yaml", sim_port, bus_port, http_port)
        data = yaml.safe_load(config.read_text())
        data["bus"]["nats"] = {"url": f"nats://127.0.0.1:{nserver.port}", "reconnect_wait_s": 0.2, "queue_size": 200}
        data["bus"]["redis"] = {"url": f"redis://127.0.0.1:{rserver.port}/0", "reconnect_max_s": 0.2, "queue_size": 200}
        config.write_text(yaml.safe_dump(data))
        sim_args = [
            "simulate",
            "--venue",
            "bybit",
            "--recording",
            str(BYBIT_RECORDING),
            "--port",
            str(sim_port),
            "--speed",
            "20",
        ]
        with (
            flowgauge(sim_args, tmp_path / "sim.log"),
            flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as proc,
        ):
            daemon = Daemon(bus_port, http_port, tmp_path / "daemon.log")

            async def both_publishing() -> bool:
                publishers = (await _status(daemon))["publishers"]
                return all(publishers[b]["connected"] and publishers[b]["published"] > 0 for b in ("nats", "redis"))

            await wait_for(both_publishing, "payloads flowing to NATS and Redis")
            dropped_before = {
                b: await _counter(daemon, "flowgauge_publish_dropped_total", backend=b) for b in ("nats", "redis")
            }

            async def restart(stop: asyncio.Event) -> dict[str, float]:
                await asyncio.to_thread(nserver.stop)
                await asyncio.to_thread(rserver.stop)

                async def both_down() -> bool:
                    publishers = (await _status(daemon))["publishers"]
                    return not publishers["nats"]["connected"] and not publishers["redis"]["connected"]

                await wait_for(both_down, "both publishers noticing their broker is gone", MAX_STATUS_S)
                # Down long enough for each 200-payload outbox to overflow (~400 payloads/s).
                await wait_for(
                    lambda: _dropped_grew(daemon, dropped_before),
                    "drops counted while the brokers are down",
                    MAX_STATUS_S,
                )
                publishers = (await _status(daemon))["publishers"]
                down = {b: float(publishers[b]["queued"]) for b in ("nats", "redis")}
                await asyncio.to_thread(nserver.start)
                await asyncio.to_thread(rserver.start)
                await stop.wait()
                return {f"{b}_queued_when_down": v for b, v in down.items()}

            async with _healthy(daemon) as healthy:
                # Longer than the others: the outage, the drops and both restarts happen inside the window.
                figures = await _under_fault(daemon, healthy, restart, fault_s=6.0)
            for backend in ("nats", "redis"):
                assert figures[f"{backend}_queued_when_down"] <= 200, figures  # the outbox bound held

            # Publishing resumes by itself: a fresh subscriber on each broker gets payloads.
            import nats
            import redis.asyncio

            nats_seen: list[bytes] = []

            async def on_msg(msg: Any) -> None:
                nats_seen.append(msg.data)

            nc = await nats.connect(f"nats://127.0.0.1:{nserver.port}", allow_reconnect=False, connect_timeout=2)
            client = redis.asyncio.Redis(port=rserver.port)
            try:
                await subscribe_live(nc, "flowgauge.v1.bybit.>", on_msg)
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe("flowgauge.v1.bybit.*")
                    redis_seen: list[object] = []

                    async def redis_payload() -> bool:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                        if message is not None:
                            redis_seen.append(message)
                        return len(redis_seen) >= 10

                    await wait_for(redis_payload, "payloads on Redis after its restart", 20)
                await wait_for(lambda: len(nats_seen) >= 10, "payloads on NATS after its restart", 20)
            finally:
                await nc.close()
                await client.aclose()
            status = (await _status(daemon))["publishers"]
            assert status["nats"]["connected"] and status["redis"]["connected"], status
            for backend in ("nats", "redis"):
                dropped = await _counter(daemon, "flowgauge_publish_dropped_total", backend=backend)
                assert dropped > dropped_before[backend], backend
            assert proc.poll() is None, daemon.log.read_text()[-3000:]


async def _dropped_grew(daemon: Daemon, before: dict[str, float]) -> bool:
    for backend in ("nats", "redis"):
        if await _counter(daemon, "flowgauge_publish_dropped_total", backend=backend) <= before[backend]:
            return False
    return True
