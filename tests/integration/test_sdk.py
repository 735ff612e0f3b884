"""The SDK (`flowgauge.subscribe`) over its three transports, against a real daemon, NATS and Redis.

One module-wide stack (the Bybit simulator, `nats-server -js`, `redis-server`, one daemon publishing to the
embedded bus, NATS with its JetStream state stream and Redis) serves the round-trip and late-joiner tests of
every transport; the restart and staleness tests start their own daemon and brokers, since they stop them.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from tests.brokers import BrokerProcess, nats_server, redis_server, wait_for_port
from tests.conftest import BYBIT_RECORDING
from tests.procs import TIMEOUT_FACTOR, flowgauge, free_port, http_get, wait_for, write_config

import flowgauge as fg
from flowgauge.sdk.payloads import MetricsPayload, StatusPayload

pytestmark = pytest.mark.integration

BTC = "flowgauge.v1.bybit.BTC-USDT-USDT"
ETH = "flowgauge.v1.bybit.ETH-USDT-USDT"
BOOKS = {BTC, ETH}
STATUS_BTC = "flowgauge.v1.status.bybit.BTC-USDT-USDT"
TRANSPORTS = ("ws", "nats", "redis")


@dataclass
class Stack:
    urls: dict[str, str]
    http_port: int
    daemon: Any


def _config(tmp: Path, sim_port: int, *, nats_port: int | None = None, redis_port: int | None = None,
            jetstream: bool = True, **publish: Any) -> tuple[Path, int, int]:
    bus_port, http_port = free_port(), free_port()
    path = write_config(tmp / f"cfg-{bus_port}.yaml", sim_port, bus_port, http_port)
    data = yaml.safe_load(path.read_text())
    if nats_port is not None:
        data["bus"]["nats"] = {"url": f"nats://127.0.0.1:{nats_port}", "jetstream": jetstream,
                               "reconnect_wait_s": 0.2}
    if redis_port is not None:
        data["bus"]["redis"] = {"url": f"redis://127.0.0.1:{redis_port}/0", "reconnect_max_s": 0.2}
    data["publish"] = {"heartbeat_s": 0.5, **publish}
    path.write_text(yaml.safe_dump(data))
    return path, bus_port, http_port


def _sim_args(port: int) -> list[str]:
    return ["simulate", "--venue", "bybit", "--recording", str(BYBIT_RECORDING), "--port", str(port), "--speed", "4"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("sdk")
    sim_port = free_port()
    with nats_server(tmp, jetstream=True) as nats, redis_server(tmp) as redis:
        config, bus_port, http_port = _config(tmp, sim_port, nats_port=nats.port, redis_port=redis.port)
        with flowgauge(_sim_args(sim_port), tmp / "sim.log"), \
                flowgauge(["run", "-c", str(config)], tmp / "daemon.log") as daemon:
            wait_for_port(bus_port, daemon, tmp / "daemon.log")
            yield Stack({"ws": f"ws://127.0.0.1:{bus_port}", "nats": f"nats://127.0.0.1:{nats.port}",
                         "redis": f"redis://127.0.0.1:{redis.port}/0"}, http_port, daemon)


class Reader:
    """Iterates a subscription in a task and keeps what it yields, so tests can wait on conditions."""

    def __init__(self, sub: fg.Subscription) -> None:
        self.sub = sub
        self.items: list[fg.Message | fg.Interrupted] = []
        self.live_delays: list[float] = []  # publication -> yielded here, seconds, per live message
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self.sub:
            self.items.append(item)
            if isinstance(item, fg.Message) and not item.snapshot and item.age_s is not None:
                self.live_delays.append(item.age_s)

    def messages(self, *, snapshot: bool | None = None) -> list[fg.Message]:
        return [m for m in self.items if isinstance(m, fg.Message) and (snapshot is None or m.snapshot == snapshot)]

    def live_valid_topics(self, after: int = 0) -> set[str]:
        return {m.topic for m in self.items[after:]
                if isinstance(m, fg.Message) and not m.snapshot and m.payload.get("book_state") == "VALID"}

    async def stop(self) -> None:
        await self.sub.close()
        await asyncio.wait_for(self.task, 10 * TIMEOUT_FACTOR)


async def _wait_live_books(stack: Stack, transport: str) -> None:
    async with fg.subscribe(stack.urls[transport], "flowgauge.v1.bybit.>") as sub:
        reader = Reader(sub)
        try:
            await wait_for(lambda: reader.live_valid_topics() >= BOOKS, f"live VALID books over {transport}", 60)
        finally:
            await reader.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_round_trip_through_each_transport(stack: Stack, transport: str) -> None:
    async with fg.subscribe(stack.urls[transport], "flowgauge.v1.bybit.>") as sub:
        reader = Reader(sub)
        try:
            await wait_for(lambda: reader.live_valid_topics() >= BOOKS, f"live VALID books over {transport}", 60)
            live = [m for m in reader.messages(snapshot=False) if m.topic in BOOKS]
            for message in live[-20:]:
                assert orjson.loads(message.data) == message.payload
                assert message.payload["venue"] == "bybit" and message.payload["schema"] == "flowgauge.v1"
                assert message.age_s is not None and -0.5 < message.age_s < 10 * TIMEOUT_FACTOR
                typed = message.typed()
                assert isinstance(typed, MetricsPayload) and typed.seq == message.payload["seq"]
        finally:
            await reader.stop()
        # Status topics are not under flowgauge.v1.bybit.>: they were listened to for heartbeats, not yielded.
        assert all(m.topic in BOOKS for m in reader.messages()), {m.topic for m in reader.messages()}
        assert set(sub.latest()) == BOOKS
        assert not sub.stale_topics()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_late_joiner_gets_current_values_first(stack: Stack, transport: str) -> None:
    await _wait_live_books(stack, transport)  # the daemon has published state before this subscriber joins
    patterns = ("flowgauge.v1.*.ETH-USDT-USDT", "flowgauge.v1.*.BTC-USDT-USDT", "flowgauge.v1.status.bybit.*")
    async with fg.subscribe(stack.urls[transport], *patterns) as sub:
        reader = Reader(sub)
        try:
            await wait_for(lambda: reader.messages(snapshot=False), f"a live message over {transport}", 30)
            first_live = next(i for i, m in enumerate(reader.items) if isinstance(m, fg.Message) and not m.snapshot)
            snapshots = reader.items[:first_live]
            topics = {m.topic for m in snapshots if isinstance(m, fg.Message)}
            assert BOOKS | {STATUS_BTC} <= topics, topics
            for message in snapshots:
                assert isinstance(message, fg.Message) and message.snapshot
                assert message.age_s is not None and message.age_s >= -0.5
            status = next(m for m in snapshots if isinstance(m, fg.Message) and m.topic == STATUS_BTC)
            assert isinstance(status.typed(), StatusPayload)
            # The overlapping patterns delivered each message once.
            assert len(topics) == len(snapshots)
        finally:
            await reader.stop()


async def test_unmatched_topics_are_filtered_with_nats_semantics(stack: Stack) -> None:
    """Redis globs let `*` cross dots; the SDK must still deliver only what the NATS pattern matches."""
    async with fg.subscribe(stack.urls["redis"], "flowgauge.v1.*.ETH-USDT-USDT") as sub:
        reader = Reader(sub)
        try:
            await wait_for(lambda: len(reader.messages(snapshot=False)) >= 20, "live ETH messages over redis", 60)
        finally:
            await reader.stop()
    assert {m.topic for m in reader.messages()} == {ETH}


async def _counter(http_port: int, name: str, backend: str) -> float:
    code, text = await http_get(http_port, "/metrics")
    assert code == 200
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'backend="{backend}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _live_after(reader: Reader, marker_index: int, *, snapshot_first: bool = True) -> bool:
    """Live VALID books arrived after the `Interrupted` at `marker_index` (and, first, current values)."""
    rest = reader.items[marker_index + 1:]
    snap = any(isinstance(m, fg.Message) and m.snapshot for m in rest)
    return (snap or not snapshot_first) and reader.live_valid_topics(after=marker_index + 1) >= BOOKS


@pytest.mark.parametrize("transport", ["nats", "redis"])
async def test_broker_restart_mid_stream(tmp_path: Path, transport: str) -> None:
    """Broker killed and restarted: the daemon keeps running and counts drops; publishing and the SDK resume."""
    sim_port = free_port()
    broker_cm = nats_server(tmp_path, jetstream=True) if transport == "nats" else redis_server(tmp_path)
    with broker_cm as broker:
        assert isinstance(broker, BrokerProcess)
        ports = {"nats_port": broker.port} if transport == "nats" else {"redis_port": broker.port}
        config, _, http_port = _config(tmp_path, sim_port, **ports)
        data = yaml.safe_load(config.read_text())
        data["bus"][transport]["queue_size"] = 20  # a short outage overflows it: drops must be counted
        config.write_text(yaml.safe_dump(data))
        url = f"{transport}://127.0.0.1:{broker.port}" + ("/0" if transport == "redis" else "")
        with flowgauge(_sim_args(sim_port), tmp_path / "sim.log"), \
                flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon:
            await wait_for(lambda: _can_subscribe(url), f"{transport} reachable", 30)
            sub = fg.subscribe(url, "flowgauge.v1.bybit.>", backoff_initial_s=0.1, backoff_max_s=0.5,
                               open_timeout_s=2)
            async with sub:
                reader = Reader(sub)
                try:
                    await wait_for(lambda: reader.live_valid_topics() >= BOOKS, "live books before the outage", 60)
                    dropped_before = await _counter(http_port, "flowgauge_publish_dropped_total", transport)
                    broker.stop()
                    await wait_for(lambda: any(isinstance(m, fg.Interrupted) for m in reader.items),
                                   "the SDK to report the interruption", 30)
                    marker = next(i for i, m in enumerate(reader.items) if isinstance(m, fg.Interrupted))

                    async def drops_counted() -> bool:
                        return await _counter(http_port, "flowgauge_publish_dropped_total", transport) \
                            > dropped_before

                    await wait_for(drops_counted, f"the daemon's {transport} drop counter to rise", 30)
                    assert daemon.poll() is None
                    broker.start()
                    # JetStream keeps its store across the restart, so current values come first; this Redis
                    # keeps nothing on disk, and the SDK may reconnect before the daemon rewrote any key.
                    await wait_for(lambda: _live_after(reader, marker, snapshot_first=transport == "nats"),
                                   "the SDK resumed after the broker came back", 60)
                    assert sub.interruptions >= 1
                    assert daemon.poll() is None
                finally:
                    await reader.stop()
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(daemon.wait, 10 * TIMEOUT_FACTOR) == 0


async def _can_subscribe(url: str) -> bool:
    try:
        async with fg.subscribe(url, "flowgauge.v1.bybit.>", open_timeout_s=1):
            return True
    except fg.SubscriberError:
        return False


async def test_daemon_restart_on_the_embedded_bus(tmp_path: Path) -> None:
    sim_port = free_port()
    config, bus_port, _ = _config(tmp_path, sim_port)
    url = f"ws://127.0.0.1:{bus_port}"
    with flowgauge(_sim_args(sim_port), tmp_path / "sim.log"):
        with flowgauge(["run", "-c", str(config)], tmp_path / "daemon1.log") as first:
            wait_for_port(bus_port, first, tmp_path / "daemon1.log")
            sub = fg.subscribe(url, "flowgauge.v1.bybit.>", backoff_initial_s=0.1, backoff_max_s=0.5)
            await sub.__aenter__()
            reader = Reader(sub)
            await wait_for(lambda: reader.live_valid_topics() >= BOOKS, "live books from the first daemon", 60)
            first.send_signal(signal.SIGTERM)
            await asyncio.to_thread(first.wait, 10 * TIMEOUT_FACTOR)
        try:
            await wait_for(lambda: any(isinstance(m, fg.Interrupted) for m in reader.items),
                           "the SDK to report the daemon going away", 30)
            marker = next(i for i, m in enumerate(reader.items) if isinstance(m, fg.Interrupted))
            with flowgauge(["run", "-c", str(config)], tmp_path / "daemon2.log"):
                # A restarted daemon has no state yet when the SDK reconnects: no current values to replay.
                await wait_for(lambda: _live_after(reader, marker, snapshot_first=False),
                               "the SDK resumed on the restarted daemon", 60)
        finally:
            await reader.stop()


async def test_current_values_go_stale_when_heartbeats_stop(tmp_path: Path) -> None:
    """NATS stays up, the daemon stops: its books' values turn stale after `stale_after_s`, not before."""
    sim_port = free_port()
    with nats_server(tmp_path, jetstream=True) as nats:
        config, _, _ = _config(tmp_path, sim_port, nats_port=nats.port, heartbeat_s=0.2)
        url = f"nats://127.0.0.1:{nats.port}"
        with flowgauge(_sim_args(sim_port), tmp_path / "sim.log"), \
                flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon:
            async with fg.subscribe(url, "flowgauge.v1.bybit.>", stale_after_s=1.5) as sub:
                reader = Reader(sub)
                try:
                    await wait_for(lambda: reader.live_valid_topics() >= BOOKS, "live books", 60)
                    assert not sub.stale_topics()
                    daemon.send_signal(signal.SIGTERM)
                    await asyncio.to_thread(daemon.wait, 10 * TIMEOUT_FACTOR)
                    await wait_for(lambda: sub.stale_topics() == BOOKS, "both books stale", 15)
                    assert not any(isinstance(m, fg.Interrupted) for m in reader.items)  # NATS stayed up
                finally:
                    await reader.stop()


# --------------------------------------------------------------------------------------------- tail


async def _run_tail(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowgauge", "tail", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60 * TIMEOUT_FACTOR)
    return proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tail_prints_json_lines_over_each_transport(stack: Stack, transport: str) -> None:
    await _wait_live_books(stack, transport)
    code, out, err = await _run_tail("flowgauge.v1.bybit.*", "--url", stack.urls[transport], "-n", "5")
    assert code == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert len(lines) == 5
    assert {line["topic"] for line in lines} <= BOOKS
    assert lines[0].get("snapshot") is True  # current values first, on every transport


async def test_tail_draws_a_live_table_on_a_terminal(stack: Stack) -> None:
    """On a terminal (a real pty), one row per instrument, refreshed in place; Ctrl-C exits 0."""
    await _wait_live_books(stack, "nats")
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "30", "TERM": "xterm-256color"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowgauge", "tail", "flowgauge.v1.bybit.>", "--url", stack.urls["nats"],
        stdin=slave, stdout=slave, stderr=asyncio.subprocess.PIPE, env=env)
    os.close(slave)
    screen = bytearray()

    def read_available() -> str:
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen.extend(chunk)
        return screen.decode(errors="replace")

    try:
        def drawn() -> bool:
            text = read_available()
            return all(s in text for s in ("depth_imb_5", "oi_chg_pct_5m", "BTC/USDT:USDT", "ETH/USDT:USDT",
                                           "VALID"))

        await wait_for(drawn, "the table with both instruments on the terminal", 30)
        assert "\x1b[" in screen.decode(errors="replace")  # cursor control: redrawn in place, not scrolled
        assert not screen.decode(errors="replace").lstrip().startswith("{")  # not the JSON lines
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10 * TIMEOUT_FACTOR) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
    assert proc.stderr is not None and await proc.stderr.read() == b""


# --------------------------------------------------------------------------------------------- examples

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def _run_example(script: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / script), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60 * TIMEOUT_FACTOR)
    assert proc.returncode == 0, err.decode()
    assert not err, err.decode()
    return out.decode()


async def test_example_embedded_strategy(stack: Stack) -> None:
    await _wait_live_books(stack, "ws")
    out = await _run_example("embedded_ofi_signal.py", stack.urls["ws"], "--max-messages", "5")
    lines = out.splitlines()
    assert len(lines) == 5 and all(line.startswith("bybit") and " -> " in line for line in lines), out


async def test_example_nats_strategy(stack: Stack) -> None:
    await _wait_live_books(stack, "nats")
    out = await _run_example("nats_depth_board.py", stack.urls["nats"], "--max-boards", "2")
    assert "BTC/USDT:USDT" in out and "ETH/USDT:USDT" in out and "depth_imb_5=" in out and "stale" not in out


async def test_example_redis_strategy(stack: Stack) -> None:
    await _wait_live_books(stack, "redis")
    out = await _run_example("redis_typed_spread_alert.py", stack.urls["redis"], "--max-messages", "30")
    assert "spread bybit BTC/USDT:USDT" in out or "spread bybit ETH/USDT:USDT" in out, out


# The stated bound: while another subscriber of the same topics reads nothing, an active subscriber still gets
# each live message within this many seconds of its publication (on a loaded 2-core machine; typically ms).
ACTIVE_SUBSCRIBER_BOUND_S = 2.0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_subscriber_that_never_reads_does_not_delay_another(stack: Stack, transport: str) -> None:
    url = stack.urls[transport]
    async with fg.subscribe(url, "flowgauge.v1.bybit.>", queue_size=20) as stalled, \
            fg.subscribe(url, "flowgauge.v1.bybit.>") as active:
        stalled_iter = stalled.__aiter__()
        first = await anext(stalled_iter)  # subscribed and consuming nothing from here on
        assert isinstance(first, fg.Message)
        reader = Reader(active)
        try:
            await wait_for(lambda: len(reader.messages(snapshot=False)) >= 150, f"150 live messages over {transport}",
                           60)
        finally:
            await reader.stop()
        delays = sorted(reader.live_delays[50:])
        assert delays and delays[-1] < ACTIVE_SUBSCRIBER_BOUND_S * TIMEOUT_FACTOR, delays[-5:]
        if transport != "ws":  # the embedded bus bounds the stalled client on the daemon's side instead
            assert stalled.dropped > 0  # its own bounded queue overflowed, oldest first, counted
        await stalled_iter.aclose()


@pytest.mark.parametrize(("transport", "script", "fresh"), [
    ("nats", "nats_depth_board.py", re.compile(r"board: [1-9]\d* live payloads")),
    ("redis", "redis_typed_spread_alert.py", re.compile(r"^spread bybit ", re.M)),
])
async def test_example_strategy_rides_out_a_broker_restart(tmp_path: Path, transport: str, script: str,
                                                           fresh: re.Pattern[str]) -> None:
    """The issue's "done when": an example strategy keeps receiving live payloads across a broker restart."""
    sim_port = free_port()
    broker_cm = nats_server(tmp_path, jetstream=True) if transport == "nats" else redis_server(tmp_path)
    with broker_cm as broker:
        assert isinstance(broker, BrokerProcess)
        ports = {"nats_port": broker.port} if transport == "nats" else {"redis_port": broker.port}
        config, _, _ = _config(tmp_path, sim_port, **ports)
        url = f"{transport}://127.0.0.1:{broker.port}" + ("/0" if transport == "redis" else "")
        with flowgauge(_sim_args(sim_port), tmp_path / "sim.log"), \
                flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log"):
            await wait_for(lambda: _can_subscribe(url), f"{transport} reachable", 30)
            out_path = tmp_path / "example.out"
            with out_path.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, str(EXAMPLES / script), url, stdout=out, stderr=asyncio.subprocess.PIPE,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                await wait_for(lambda: fresh.search(out_path.read_text()), "live payloads in the example", 60)
                broker.stop()
                await wait_for(lambda: "interrupted:" in out_path.read_text(), "the example told of the loss", 30)
                broker.start()

                def fresh_after_restart() -> bool:
                    text = out_path.read_text()
                    return fresh.search(text, text.index("interrupted:")) is not None

                await wait_for(fresh_after_restart, "live payloads in the example after the restart", 60)
                assert proc.returncode is None  # the strategy kept running throughout
            finally:
                if proc.returncode is None:
                    proc.terminate()
                await proc.wait()


async def test_heartbeats_alone_keep_a_quiet_book_fresh(tmp_path: Path) -> None:
    """A book that publishes nothing while its status heartbeats keep coming is not stale (a quiet market);
    it turns stale once the heartbeats stop. Payloads published by hand on a real nats-server, so the book
    really is quiet: the daemon-driven staleness test above has book payloads flowing throughout."""
    import nats

    with nats_server(tmp_path) as server:
        url = f"nats://127.0.0.1:{server.port}"
        publisher = await nats.connect(url)
        try:
            async with fg.subscribe(url, "flowgauge.v1.bybit.*", stale_after_s=1.0) as sub:
                reader = Reader(sub)
                try:
                    await publisher.publish(BTC, orjson.dumps({"venue": "bybit", "ts_publish": 1}))
                    await wait_for(lambda: BTC in sub.latest(), "the one book payload", 10)
                    deadline = asyncio.get_running_loop().time() + 2.5  # 2.5 x stale_after_s of heartbeats only
                    while asyncio.get_running_loop().time() < deadline:
                        await publisher.publish(STATUS_BTC, orjson.dumps({"heartbeat": True, "ts_publish": 2}))
                        await publisher.flush()
                        await asyncio.sleep(0.2)  # the heartbeat period of this stand-in daemon
                        assert not sub.is_stale(BTC)
                    await wait_for(lambda: sub.is_stale(BTC), "the book stale once heartbeats stopped", 5)
                    assert [m.topic for m in reader.messages()] == [BTC]  # heartbeats heard, not yielded
                finally:
                    await reader.stop()
        finally:
            await publisher.close()


async def test_nats_a_message_published_right_after_entering_arrives(tmp_path: Path) -> None:
    """Entering a NATS subscription returns only once the server holds it: a message another connection
    publishes right after is delivered, each of 30 times. Under `>` (subscribed as `flowgauge.v1.>`) neither the
    probe that confirmed the subscription, an inbox of the SDK's own connection, nor anything else is yielded.

    The 30 deliveries pass without the confirmation too: the JetStream request that follows it (answered "no
    responders" by this core server) is queued behind the SUBs and so orders them by itself.
    test_sdk_errors.py's test_nats_entering_fails_unless_the_server_confirms_the_subscription is the test that
    fails without it."""
    import nats

    async def first_book(sub: fg.Subscription, i: int) -> list[str]:
        """Topics yielded up to the book payload published right after entering; checks that payload."""
        await publisher.publish(BTC, orjson.dumps({"venue": "bybit", "i": i}))
        iterator = sub.__aiter__()
        seen: list[str] = []
        while not seen or seen[-1] != BTC:
            item = await asyncio.wait_for(anext(iterator), 10 * TIMEOUT_FACTOR)
            assert isinstance(item, fg.Message)
            seen.append(item.topic)
        assert item.payload == {"venue": "bybit", "i": i}
        return seen

    with nats_server(tmp_path) as server:
        url = f"nats://127.0.0.1:{server.port}"
        publisher = await nats.connect(url)
        try:
            for i in range(30):
                async with fg.subscribe(url, "flowgauge.v1.>", reconnect=False) as sub:
                    assert await first_book(sub, i) == [BTC]
            async with fg.subscribe(url, ">", reconnect=False) as sub:
                assert await first_book(sub, 30) == [BTC]
        finally:
            await publisher.close()


# Subjects of other applications on a shared broker, and ones that look like NATS system subjects: a flowgauge
# subscription never yields any of them, whatever its patterns.
_FOREIGN = ("other.app.tick", "news", "_INBOX.someone.else", "$SYS.REQ.SERVER.PING.x", "$JS.EVENT.x",
            "flowgauge.v2.bybit.BTC-USDT-USDT", "flowgauge.v1")


@pytest.mark.parametrize("jetstream", [False, True], ids=["core", "jetstream"])
async def test_nats_subscribing_to_everything_yields_only_flowgauge_topics(tmp_path: Path, jetstream: bool) -> None:
    """`>` on NATS: entering returns once the subscription is confirmed and current values are read, well within
    a long open_timeout_s, and only flowgauge topics are yielded: not the SDK's own JetStream API requests nor
    their replies, not what another client publishes on other subjects. Without the fix, on a core server the
    SDK's own `>` subscription answered its stream-info request's "no responders" check, so entering took the
    whole open_timeout_s; with JetStream, `$JS.API.STREAM.INFO...`, its `_INBOX` reply and a `$JS.EVENT`
    advisory came out as messages."""
    import nats
    import nats.js.api

    open_timeout_s = 20 * TIMEOUT_FACTOR
    with nats_server(tmp_path, jetstream=jetstream) as server:
        url = f"nats://127.0.0.1:{server.port}"
        publisher = await nats.connect(url)
        try:
            expected = [(BTC, False)]
            if jetstream:  # the daemon's state stream, with one current value to read (more JetStream requests)
                js = publisher.jetstream()
                await js.add_stream(nats.js.api.StreamConfig(name="FLOWGAUGE_STATE", subjects=["flowgauge.v1.>"],
                                                             max_msgs_per_subject=1))
                await js.publish(ETH, orjson.dumps({"venue": "bybit", "ts_publish": 1}))
                expected.insert(0, (ETH, True))
            started = asyncio.get_running_loop().time()
            async with fg.subscribe(url, ">", reconnect=False, open_timeout_s=open_timeout_s) as sub:
                entered_s = asyncio.get_running_loop().time() - started
                assert entered_s < 5 * TIMEOUT_FACTOR, f"entering took {entered_s:.1f} s of {open_timeout_s:g}"
                for subject in _FOREIGN:
                    await publisher.publish(subject, b'{"not": "flowgauge"}')
                await publisher.publish(BTC, orjson.dumps({"venue": "bybit", "ts_publish": 2}))
                # One publishing connection: its messages arrive in order, so everything foreign came before BTC.
                iterator = sub.__aiter__()
                seen: list[tuple[str, bool]] = []
                while not seen or seen[-1][0] != BTC:
                    item = await asyncio.wait_for(anext(iterator), 10 * TIMEOUT_FACTOR)
                    assert isinstance(item, fg.Message)
                    seen.append((item.topic, item.snapshot))
                assert seen == expected
        finally:
            await publisher.close()


async def test_redis_subscribing_to_everything_yields_only_flowgauge_topics(tmp_path: Path) -> None:
    """`>` on Redis: only flowgauge channels and last-value keys are yielded, not another application's channels
    (without the fix `>` became the glob `*`, every channel of the server, and the filter `>` kept them all),
    nor a key under the last-value prefix that names no flowgauge topic."""
    import redis.asyncio as aioredis

    with redis_server(tmp_path) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        publisher = aioredis.from_url(url)
        try:
            await publisher.set(f"flowgauge:last:{ETH}", orjson.dumps({"venue": "bybit", "ts_publish": 1}))
            await publisher.set("flowgauge:last:other.app.tick", b'{"not": "flowgauge"}')
            async with fg.subscribe(url, ">", reconnect=False, open_timeout_s=20 * TIMEOUT_FACTOR) as sub:
                reader = Reader(sub)
                try:
                    async def btc_after_foreign() -> bool:
                        # PSUBSCRIBE is not confirmed on entering: publish rounds until one arrives. Redis delivers
                        # one connection's messages in order, so each round's foreign channels come before BTC.
                        for channel in _FOREIGN:
                            await publisher.publish(channel, b'{"not": "flowgauge"}')
                        await publisher.publish(BTC, orjson.dumps({"venue": "bybit", "ts_publish": 2}))
                        return any(m.topic == BTC for m in reader.messages())

                    await wait_for(btc_after_foreign, "a live BTC message over redis", 20)
                finally:
                    await reader.stop()
            assert [(m.topic, m.snapshot) for m in reader.messages()][:2] == [(ETH, True), (BTC, False)]
            assert {m.topic for m in reader.messages()} == {ETH, BTC}
        finally:
            await publisher.aclose()
