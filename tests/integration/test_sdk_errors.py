"""What `flowgauge.subscribe` raises when it cannot subscribe, on each transport, against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from tests.brokers import BrokerProcess, _binary, nats_server, redis_server
from tests.procs import TIMEOUT_FACTOR, free_port, wait_for

import flowgauge as fg

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scheme", ["ws", "nats", "redis"])
async def test_nothing_listening_is_bus_unreachable(scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}"
    with pytest.raises(fg.BusUnreachable) as caught:
        async with fg.subscribe(url, "flowgauge.v1.>", open_timeout_s=2):
            pass
    assert "\n" not in str(caught.value) and url.split("//")[1] in str(caught.value)


async def test_nats_token_required(tmp_path: Path) -> None:
    port = free_port()
    server = BrokerProcess([_binary("nats-server"), "-a", "127.0.0.1", "-p", str(port), "--auth", "s3cret"],
                           port, tmp_path / "nats")
    server.start()
    try:
        url = f"nats://127.0.0.1:{port}"
        with pytest.raises(fg.Unauthorized):
            async with fg.subscribe(url, "flowgauge.v1.>", open_timeout_s=2):
                pass
        async with fg.subscribe(url, "flowgauge.v1.>", token="s3cret", open_timeout_s=2) as sub:
            assert sub.latest() == {}  # core NATS only: no state stream, no current values
    finally:
        server.stop()


async def test_redis_password_required(tmp_path: Path) -> None:
    port = free_port()
    server = BrokerProcess([_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "s3cret"],
                           port, tmp_path / "redis")
    server.start()
    try:
        url = f"redis://127.0.0.1:{port}/0"
        with pytest.raises(fg.Unauthorized):
            async with fg.subscribe(url, "flowgauge.v1.>", open_timeout_s=2):
                pass
        with pytest.raises(fg.Unauthorized):
            async with fg.subscribe(url, "flowgauge.v1.>", token="wrong", open_timeout_s=2):
                pass
        async with fg.subscribe(f"redis://:s3cret@127.0.0.1:{port}/0", "flowgauge.v1.>", open_timeout_s=2):
            pass
        async with fg.subscribe(url, "flowgauge.v1.>", token="s3cret", open_timeout_s=2):
            pass
    finally:
        server.stop()


async def test_a_nats_url_that_is_not_nats(tmp_path: Path) -> None:
    """A Redis port given as a NATS URL: NotABus in one line, not a hang, and no connection left open."""
    import redis.asyncio as aioredis

    port = free_port()
    server = BrokerProcess([_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(tmp_path)], port, tmp_path / "redis")
    server.start()
    try:
        for _ in range(3):  # as a reconnecting subscription would retry it
            with pytest.raises(fg.NotABus) as caught:
                async with fg.subscribe(f"nats://127.0.0.1:{port}", "flowgauge.v1.>", open_timeout_s=1):
                    pass
            assert "\n" not in str(caught.value) and "NATS" in str(caught.value)
        # Redis counts its client connections: only the one asking must be left (nats-py keeps the socket
        # of a failed handshake open unless the SDK closes the client).
        client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            connections = await client.client_list()
        finally:
            await client.aclose()
        assert len(connections) == 1, connections
    finally:
        server.stop()


@pytest.mark.parametrize("scheme", ["ws", "nats", "redis"])
async def test_an_http_server_is_not_a_bus(scheme: str) -> None:
    """An HTTP page at the URL (e.g. the daemon's /metrics port): NotABus in one line on every transport."""
    import sys

    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await wait_for(lambda: _accepts(port), "the HTTP server", 10)
        with pytest.raises(fg.NotABus) as caught:
            async with fg.subscribe(f"{scheme}://127.0.0.1:{port}", "flowgauge.v1.>", open_timeout_s=1):
                pass
        assert "\n" not in str(caught.value) and str(port) in str(caught.value)
    finally:
        server.terminate()
        await server.wait()


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


class _Gate:
    """A loopback TCP relay in front of a broker that can hold new connections and cut the current ones.

    It opens the window a race needs (a reconnect attempt in flight while the caller closes) without timing.
    """

    def __init__(self, upstream_port: int, *, freeze_on: bytes | None = None,
                 hold_from: bytes | None = None) -> None:
        self.upstream_port = upstream_port
        self.freeze_on = freeze_on  # client bytes that stop the flow when they pass (a path dying right then)
        # The client's protocol lines from the first one starting with `hold_from` on never reach the server
        # (they are kept in `kept`) while the server's bytes keep flowing: a path that stalled one way. For one
        # client connection at a time.
        self.hold_from = hold_from
        self.kept = bytearray()
        self._partial = bytearray()  # the client's unfinished last line, forwarded (or kept) once complete
        self.passing = asyncio.Event()
        self.passing.set()
        self.flowing = asyncio.Event()  # cleared: bytes are lost both ways, connections stay open (a dead path)
        self.flowing.set()
        self.held = 0  # connections that arrived while closed
        self.clients: set[asyncio.StreamWriter] = set()  # client connections still open
        self.port = 0
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        for writer in list(self.clients):
            writer.transport.abort()

    async def stop(self) -> None:
        self.passing.set()  # held connections go through, to be cut like the others
        self.cut()
        if self._relays:
            await asyncio.wait(self._relays, timeout=5 * TIMEOUT_FACTOR)
        if self._server is not None:
            self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)
        self.clients.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if not self.passing.is_set():
                self.held += 1
                await self.passing.wait()
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(self._pipe(reader, upstream, from_client=True),
                                 self._pipe(up_reader, writer, from_client=False))
        except OSError:
            pass
        finally:
            self.clients.discard(writer)
            for end in (writer, upstream):
                if end is not None:
                    end.transport.abort()

    def _hold(self, chunk: bytes) -> bytes:
        """The part of the client's `chunk` to forward: whole lines before the first `hold_from` line."""
        assert self.hold_from is not None
        if self.kept:
            self.kept += chunk
            return b""
        self._partial += chunk
        forward = bytearray()
        while (end := self._partial.find(b"\r\n")) >= 0:
            line = bytes(self._partial[:end + 2])
            del self._partial[:end + 2]
            if line.startswith(self.hold_from):
                self.kept += line + self._partial
                self._partial.clear()
                break
            forward += line
        return bytes(forward)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, from_client: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := await source.read(65536):
                if from_client and self.freeze_on is not None and self.freeze_on in chunk:
                    self.flowing.clear()
                if not self.flowing.is_set():
                    continue  # lost on the dead path; reading on still tells when a side closes
                if from_client and self.hold_from is not None:
                    chunk = self._hold(chunk)
                    if not chunk:
                        continue
                sink.write(chunk)
                await sink.drain()
        sink.transport.abort()  # one side ended: end the other, as a broken connection would


async def test_close_during_a_reconnect_attempt_ends_iteration(tmp_path: Path) -> None:
    """close() while a reconnect attempt is connecting: iteration ends and that new connection is closed."""
    with nats_server(tmp_path) as nats:
        gate = _Gate(nats.port)
        await gate.start()
        try:
            sub = fg.subscribe(f"nats://127.0.0.1:{gate.port}", "flowgauge.v1.>", open_timeout_s=5,
                               backoff_initial_s=0.05, backoff_max_s=0.05)
            await sub.__aenter__()
            items: list[fg.Message | fg.Interrupted] = []

            async def read() -> None:
                async for item in sub:
                    items.append(item)

            reader = asyncio.create_task(read())
            gate.passing.clear()
            gate.cut()
            await wait_for(lambda: items and isinstance(items[0], fg.Interrupted), "the Interrupted marker", 10)
            await wait_for(lambda: gate.held >= 1, "a reconnect attempt held by the gate", 10)
            await sub.close()
            gate.passing.set()  # the attempt in flight now completes, after close()
            try:
                await asyncio.wait_for(reader, 5 * TIMEOUT_FACTOR)
            finally:
                reader.cancel()
            await wait_for(lambda: not gate.clients, "the reconnected client's connection closed", 10)
        finally:
            await gate.stop()


async def test_close_during_reconnect_backoff_ends_iteration_at_once(tmp_path: Path) -> None:
    """close() while the subscription waits out a long reconnect backoff: iteration ends without that wait."""
    with nats_server(tmp_path) as nats:
        sub = fg.subscribe(f"nats://127.0.0.1:{nats.port}", "flowgauge.v1.>", open_timeout_s=2,
                           backoff_initial_s=30, backoff_max_s=30)
        await sub.__aenter__()
        items: list[fg.Message | fg.Interrupted] = []

        async def read() -> None:
            async for item in sub:
                items.append(item)

        reader = asyncio.create_task(read())
        nats.stop()
        await wait_for(lambda: items, "the Interrupted marker", 10)
        started = time.monotonic()
        await sub.close()
        try:
            await asyncio.wait_for(reader, 5 * TIMEOUT_FACTOR)
        finally:
            reader.cancel()
        assert time.monotonic() - started < 5 * TIMEOUT_FACTOR


async def test_data_that_is_not_a_payload_stops_neither_the_sdk_nor_tail(tmp_path: Path) -> None:
    """Another publisher's bytes on a flowgauge topic (here a last-value key that is not JSON): the SDK yields
    the message and keeps going; tail skips it with one line on stderr instead of 'invalid pattern', exit 2."""
    import sys

    import redis.asyncio as aioredis

    port = free_port()
    server = BrokerProcess([_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(tmp_path)], port, tmp_path / "redis")
    server.start()
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.from_url(url)
    try:
        await client.set("flowgauge:last:flowgauge.v1.bybit.A", b"not json")
        await client.set("flowgauge:last:flowgauge.v1.bybit.B", b"[1, 2]")
        await client.set("flowgauge:last:flowgauge.v1.bybit.C", b'{"venue": "bybit", "ts_publish": 1}')
        async with fg.subscribe(url, "flowgauge.v1.bybit.*", open_timeout_s=2) as sub:
            iterator = sub.__aiter__()
            current = [await asyncio.wait_for(anext(iterator), 5 * TIMEOUT_FACTOR) for _ in range(3)]
            assert [m.topic for m in current if isinstance(m, fg.Message) and m.snapshot] == [
                "flowgauge.v1.bybit.A", "flowgauge.v1.bybit.B", "flowgauge.v1.bybit.C"]
            await client.publish("flowgauge.v1.bybit.A", b'{"venue": "bybit", "ts_publish": 2}')
            live = await asyncio.wait_for(anext(iterator), 5 * TIMEOUT_FACTOR)
            assert isinstance(live, fg.Message) and live.payload["ts_publish"] == 2
            await iterator.aclose()  # type: ignore[attr-defined]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "flowgauge", "tail", "flowgauge.v1.bybit.*", "--url", url, "--json", "-n", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30 * TIMEOUT_FACTOR)
        assert proc.returncode == 0, err.decode()
        assert out.decode().splitlines() == [
            '{"topic":"flowgauge.v1.bybit.C","payload":{"venue":"bybit","ts_publish":1},"snapshot":true}']
        assert err.decode().count("\n") == 1 and "flowgauge.v1.bybit.A" in err.decode() \
            and "not a JSON object" in err.decode()
    finally:
        await client.aclose()
        server.stop()


async def test_nothing_is_yielded_after_close(tmp_path: Path) -> None:
    """Messages still queued in the SDK when the caller closes are not yielded: the async for ends."""
    import nats

    with nats_server(tmp_path) as server:
        url = f"nats://127.0.0.1:{server.port}"
        publisher = await nats.connect(url)
        try:
            async with fg.subscribe(url, "flowgauge.v1.>", queue_size=10) as sub:
                iterator = sub.__aiter__()
                for i in range(100):
                    await publisher.publish("flowgauge.v1.bybit.BTC-USDT-USDT", b'{"i": %d}' % i)
                await publisher.flush()
                await wait_for(lambda: sub.dropped == 90, "the SDK's queue full (10 queued, 90 dropped)", 10)
                first = await anext(iterator)  # the subscription is iterated, with 9 more queued
                assert isinstance(first, fg.Message) and first.payload == {"i": 90}
                await sub.close()
                after = [item async for item in iterator]
                assert after == []
        finally:
            await publisher.close()


@pytest.mark.parametrize("scheme", ["nats", "redis"])
async def test_a_connection_gone_silent_is_reported_lost(tmp_path: Path, scheme: str) -> None:
    """The path to the broker stops carrying bytes without a reset: the SDK says the connection is lost within
    a bound set by open_timeout_s (Redis sends no keepalive, so it read nothing forever; nats-py's own pings
    come every 2 minutes, so it took 4-6 minutes)."""
    broker = nats_server(tmp_path) if scheme == "nats" else redis_server(tmp_path)
    with broker as server:
        gate = _Gate(server.port)
        await gate.start()
        try:
            async with fg.subscribe(f"{scheme}://127.0.0.1:{gate.port}", "flowgauge.v1.>", open_timeout_s=1,
                                    backoff_initial_s=30, backoff_max_s=30) as sub:
                items: list[fg.Message | fg.Interrupted] = []

                async def read() -> None:
                    async for item in sub:
                        items.append(item)

                reader = asyncio.create_task(read())
                try:
                    gate.flowing.clear()
                    started = time.monotonic()
                    await wait_for(lambda: items, "the Interrupted marker of a silent connection", 10)
                    assert isinstance(items[0], fg.Interrupted), items
                    assert time.monotonic() - started < 5 * TIMEOUT_FACTOR, items[0]  # 2-3 times open_timeout_s
                finally:
                    reader.cancel()
        finally:
            await gate.stop()


async def test_nats_that_stops_answering_after_connect_is_a_subscriber_error(tmp_path: Path) -> None:
    """NATS takes the connection, then the path dies as the SDK subscribes: entering raises BusUnreachable in
    one line within a bound (it raised nats-py's FlushTimeoutError, which is no SubscriberError, so tail
    printed a traceback), and the connection is closed."""
    with nats_server(tmp_path) as nats:
        gate = _Gate(nats.port, freeze_on=b"SUB ")
        await gate.start()
        try:
            started = time.monotonic()
            with pytest.raises(fg.BusUnreachable) as caught:
                async with fg.subscribe(f"nats://127.0.0.1:{gate.port}", "flowgauge.v1.>", open_timeout_s=1):
                    pass
            assert time.monotonic() - started < 5 * TIMEOUT_FACTOR
            assert "\n" not in str(caught.value) and "did not confirm the subscription" in str(caught.value)
            await wait_for(lambda: not gate.clients, "the SDK's connection closed", 10)
        finally:
            await gate.stop()


async def test_nats_entering_fails_unless_the_server_confirms_the_subscription(tmp_path: Path) -> None:
    """The server never gets the SDK's SUB (the client's bytes stop at it, the server's keep flowing): entering
    raises BusUnreachable within a bound, never returns with a subscription the server does not hold.

    It returned: nats-py writes flush()'s PING to the socket ahead of the SUBs still in its pending buffer, so
    the PONG came back through this path, the JetStream request for current values (queued behind the SUB)
    timed out into "no current values", and entering succeeded with nothing subscribed."""
    with nats_server(tmp_path) as nats:
        gate = _Gate(nats.port, hold_from=b"SUB ")
        await gate.start()
        try:
            started = time.monotonic()
            with pytest.raises(fg.BusUnreachable) as caught:
                async with fg.subscribe(f"nats://127.0.0.1:{gate.port}", "flowgauge.v1.>", open_timeout_s=1):
                    pass
            assert time.monotonic() - started < 5 * TIMEOUT_FACTOR
            assert "\n" not in str(caught.value) and "did not confirm the subscription" in str(caught.value)
            assert gate.kept.startswith(b"SUB flowgauge.v1.> ")  # the server never had it
            await wait_for(lambda: not gate.clients, "the SDK's connection closed", 10)
        finally:
            await gate.stop()
