"""`flowgauge tail`, `simulate` and `bench` as real subprocesses: one line for a mistake, the README's exit codes.

The bus is a real `EmbeddedBus` on a free loopback port inside the test's loop; the HTTP server that is not a
bus is a real aiohttp server; the busy port is a real listening socket.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import orjson
import pytest
import zstandard
from aiohttp import web
from tests.conftest import BYBIT_RECORDING, FIXTURES
from tests.procs import TIMEOUT_FACTOR, flowgauge, free_port, http_get, wait_for, write_config

from flowgauge.publish.embedded import EmbeddedBus
from flowgauge.publish.topics import book_topic

pytestmark = pytest.mark.integration

EXIT_TIMEOUT = 20.0 * TIMEOUT_FACTOR
BTC = book_topic("bybit", "BTC/USDT:USDT")
TOKEN = "s3cret-token"
OKX_RECORDING = FIXTURES / "okx" / "okx-v5-2022-05.jsonl.zst"
BINANCE_RECORDING = FIXTURES / "binanceusdm" / "binance-usdm-ethusdt-2024-08.jsonl.zst"


class Cli:
    """A running `python -m flowgauge ...` with its stdout and stderr read as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.ensure_future(self._read(proc.stdout, self.stdout)),
            asyncio.ensure_future(self._read(proc.stderr, self.stderr)),
        ]

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: list[str]) -> None:
        async for line in stream:
            into.append(line.decode(errors="replace"))

    async def finish(self) -> int:
        """Wait (bounded) for the process to exit and its output to be read; returns the exit code."""
        async with asyncio.timeout(EXIT_TIMEOUT):
            code = await self.proc.wait()
            await asyncio.gather(*self._readers)
        return code

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    @property
    def err(self) -> str:
        return "".join(self.stderr)


@asynccontextmanager
async def cli(*args: str) -> AsyncIterator[Cli]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FLOWGAUGE_BUS__EMBEDDED__TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowgauge", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    running = Cli(proc)
    try:
        yield running
    finally:
        running.kill()
        await running.finish()


async def run_cli(*args: str) -> tuple[int, str, str]:
    async with cli(*args) as proc:
        code = await proc.finish()
    return code, "".join(proc.stdout), proc.err


def assert_one_line(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@asynccontextmanager
async def bus(token: str | None = None) -> AsyncIterator[EmbeddedBus]:
    async with EmbeddedBus(port=0, token=token, close_timeout=2.0) as running:
        yield running


def bus_url(running: EmbeddedBus) -> str:
    return f"ws://127.0.0.1:{running.bound_port}"


def payload(seq: int) -> bytes:
    return orjson.dumps({"schema": "flowgauge.v1", "seq": seq})


async def publish_until_printed(running: EmbeddedBus, proc: Cli, topic: str = BTC) -> None:
    """Publish until `tail` has printed a line: proof that it connected and subscribed."""
    seq = 0

    def printed() -> bool:
        nonlocal seq
        seq += 1
        running.publish(topic, payload(seq))
        return bool(proc.stdout)

    await wait_for(printed, "tail to print a published payload")


# ------------------------------------------------------------------------------------------------- tail


async def test_tail_prints_matching_payloads_and_stops_after_count() -> None:
    async with bus() as running, cli("tail", "flowgauge.v1.bybit.>", "--url", bus_url(running), "-n", "3") as proc:
        await publish_until_printed(running, proc)
        for seq in range(1000, 1010):
            running.publish(BTC, payload(seq))
        assert await proc.finish() == 0, proc.err
    lines = [orjson.loads(line) for line in proc.stdout]
    assert len(lines) == 3
    assert {line["topic"] for line in lines} == {BTC}
    assert proc.err == ""


async def test_tail_prints_current_values_marked_snapshot_then_live_payloads() -> None:
    eth = book_topic("bybit", "ETH/USDT:USDT")
    async with bus() as running:
        running.publish(BTC, payload(1))
        running.publish(eth, payload(2))
        running.publish(book_topic("okx", "BTC/USDT:USDT"), payload(3))  # outside the pattern
        async with cli("tail", "flowgauge.v1.bybit.>", "--url", bus_url(running), "-n", "3") as proc:
            # Nothing new is published until both current values are printed: they come on subscribe.
            await wait_for(lambda: len(proc.stdout) >= 2, "tail to print the current values")
            running.publish(BTC, payload(4))
            assert await proc.finish() == 0, proc.err
    lines = [orjson.loads(line) for line in "".join(proc.stdout).splitlines()]
    snapshot = sorted(lines[:2], key=lambda line: line["topic"])
    assert snapshot == [
        {"topic": BTC, "payload": {"schema": "flowgauge.v1", "seq": 1}, "snapshot": True},
        {"topic": eth, "payload": {"schema": "flowgauge.v1", "seq": 2}, "snapshot": True},
    ]
    assert lines[2] == {"topic": BTC, "payload": {"schema": "flowgauge.v1", "seq": 4}}


async def test_tail_into_a_pipe_that_closes_exits_quietly() -> None:
    async with bus() as running:
        url = bus_url(running)
        # `head -n 1` exits after the first line; tail's next write meets a closed pipe.
        script = f"{shlex.quote(sys.executable)} -m flowgauge tail --url {url} | head -n 1; exit ${{PIPESTATUS[0]}}"
        shell = await asyncio.create_subprocess_exec(
            "bash", "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        finished = asyncio.ensure_future(shell.communicate())
        seq = 0
        async with asyncio.timeout(EXIT_TIMEOUT):
            while not finished.done():
                seq += 1
                running.publish(BTC, payload(seq))
                await asyncio.wait([finished], timeout=0.02)
        out, err = finished.result()
    assert shell.returncode == 0, err.decode()
    assert err.decode() == ""
    assert orjson.loads(out)["topic"] == BTC


async def test_tail_without_a_daemon_says_connection_refused() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    code, out, err = await run_cli("tail", "--url", url)
    assert code == 1
    assert_one_line(err, "tail:", url, "connection refused")
    assert out == ""


async def test_tail_with_wss_at_the_plain_bus_says_tls_failed() -> None:
    async with bus() as running:
        url = f"wss://127.0.0.1:{running.bound_port}"
        code, _, err = await run_cli("tail", "--url", url)
    assert code == 1
    assert_one_line(err, url, "TLS handshake")


async def test_tail_at_an_unknown_host_says_host_not_found() -> None:
    url = "ws://flowgauge-bus.invalid:8765"
    code, _, err = await run_cli("tail", "--url", url)
    assert code == 1
    assert_one_line(err, url, "host not found")


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_tail_with_missing_or_wrong_token_says_401(token: str | None) -> None:
    async with bus(token=TOKEN) as running:
        args = ["tail", "--url", bus_url(running)] + (["--token", token] if token else [])
        code, _, err = await run_cli(*args)
    assert code == 2
    assert_one_line(err, "HTTP 401", "token is wrong" if token else "token is required")


async def test_tail_with_the_right_token_subscribes() -> None:
    async with bus(token=TOKEN) as running, cli("tail", "--url", bus_url(running), "--token", TOKEN, "-n", "1") as proc:
        await publish_until_printed(running, proc)
        assert await proc.finish() == 0, proc.err


async def test_tail_with_a_bad_pattern_names_it() -> None:
    async with bus() as running:
        code, _, err = await run_cli("tail", "flowgauge.v1..bybit", "--url", bus_url(running))
    assert code == 2
    assert_one_line(err, "tail: invalid pattern", "flowgauge.v1..bybit", "empty token")


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/", "not a url", "ws://127.0.0.1:99999", "ws:///nohost"])
async def test_tail_with_a_non_websocket_url_says_so(url: str) -> None:
    url = url.format(port=free_port())
    code, _, err = await run_cli("tail", "--url", url)
    assert code == 2
    assert_one_line(err, "tail:", repr(url))


async def test_tail_at_a_plain_http_server_says_it_is_not_the_bus() -> None:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text="a web page, not a websocket endpoint\n")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        url = f"ws://127.0.0.1:{port}/"
        code, _, err = await run_cli("tail", "--url", url)
    finally:
        await runner.cleanup()
    assert code == 2
    assert_one_line(err, url, "not the flowgauge bus", "HTTP 200")


async def test_tail_pattern_matching_nothing_says_so_and_keeps_waiting() -> None:
    pattern = "flowgauge.v1.nosuchvenue.>"
    async with bus() as running, cli("tail", pattern, "--url", bus_url(running), "--quiet-after", "0.5") as proc:

        def noted() -> bool:
            running.publish(BTC, payload(1))  # traffic on other topics does not count as a match
            return bool(proc.stderr)

        await wait_for(noted, "tail's note that nothing matched")
        assert_one_line(proc.err, "nothing published matching", repr(pattern), "still waiting")
        assert proc.proc.returncode is None  # it keeps waiting after the note
        running.publish(book_topic("nosuchvenue", "BTC/USDT:USDT"), payload(2))
        await wait_for(lambda: proc.stdout, "the late match to be printed")
        proc.proc.send_signal(signal.SIGINT)
        assert await proc.finish() == 0
    assert orjson.loads(proc.stdout[0])["payload"]["seq"] == 2


async def test_tail_reports_the_daemon_going_away() -> None:
    async with bus() as running, cli("tail", "--url", bus_url(running)) as proc:
        await publish_until_printed(running, proc)
        await running.close()
        code = await proc.finish()
    assert code == 1
    assert_one_line(proc.err, "closed the connection", "1001")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_tail_exits_0_on_signal(signum: int) -> None:
    async with bus() as running, cli("tail", "--url", bus_url(running)) as proc:
        await publish_until_printed(running, proc)
        proc.proc.send_signal(signum)
        assert await proc.finish() == 0
    assert proc.err == ""


# --------------------------------------------------------------------------------------------- simulate


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    ("args", "venue"),
    [(["--venue", "bybit", "--port", "{port}"], "bybit"), (["--base-port", "{before}"], "binanceusdm")],
)
async def test_simulate_on_a_busy_port_names_the_port_and_venue(args: Sequence[str], venue: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        filled = [a.format(port=port, before=port - 1) for a in args]
        code, _, err = await run_cli("simulate", *filled)
    assert code == 2
    assert_one_line(err, f"127.0.0.1:{port}", venue, "already in use")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--speed", "-1"], ["--speed", "must be >= 0"]),
        (["--port", "99999"], ["--port", "0..65535"]),
        (["--garbage-every", "0"], ["--garbage-every", "must be >= 1"]),
        (["--base-port", "65534"], ["--base-port 65534", "no room for 5 ports"]),
        (["--venue", "bybit", "--recording", "{not_json}"], ["bybit", "cannot serve the recording", "not valid JSON"]),
        (["--venue", "bybit", "--recording", "{directory}"], ["bybit", "Is a directory"]),
    ],
)
async def test_simulate_bad_arguments_give_one_line(args: Sequence[str], needles: list[str], tmp_path: Path) -> None:
    not_json = tmp_path / "notes.txt"
    not_json.write_text("these are notes, not a recording\n")
    filled = [a.format(not_json=not_json, directory=tmp_path) for a in args]
    code, _, err = await run_cli("simulate", *filled)
    assert code == 2
    assert_one_line(err, *needles)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_simulate_exits_0_on_signal(signum: int) -> None:
    port = free_port()
    async with cli("simulate", "--venue", "bybit", "--port", str(port)) as proc:
        await wait_for(lambda: _accepts(port), "the simulator to listen")
        proc.proc.send_signal(signum)
        assert await proc.finish() == 0, proc.err
    assert "Traceback" not in proc.err


VENUE_ORDER = ["bybit", "binanceusdm", "okx", "deribit", "hyperliquid"]  # --base-port order (cli --help)


@contextmanager
def busy_ports(count: int) -> Iterator[tuple[int, list[socket.socket]]]:
    """`count` consecutive loopback ports, all listening: (first port, their sockets)."""
    for _ in range(50):
        base = free_port()
        if base + count > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
                sock.listen()
        except OSError:  # one of the run was taken: try another
            for sock in held:
                sock.close()
            continue
        try:
            yield base, held
        finally:
            for sock in held:
                sock.close()
        return
    raise AssertionError(f"no {count} consecutive free loopback ports")


async def test_simulate_all_names_every_busy_port_every_time() -> None:
    # Before: the simulators started together and the first failure cancelled the rest, so one run named
    # bybit, the next three venues, the next two. Every port is now bound before any simulator starts.
    with busy_ports(5) as (base, _):
        for _ in range(2):
            code, _, err = await run_cli("simulate", "--base-port", str(base))
            assert code == 2, err
            assert "Traceback" not in err, err
            lines = err.strip().splitlines()
            assert lines == [
                f"simulate: {venue}: cannot listen on 127.0.0.1:{base + i}: Address already in use"
                for i, venue in enumerate(VENUE_ORDER)
            ], err


async def test_simulate_all_with_some_ports_busy_names_exactly_those() -> None:
    with busy_ports(5) as (base, held):
        free = [base, base + 2, base + 4]  # bybit, okx, hyperliquid's ports free; binanceusdm, deribit busy
        for port in free:
            held[port - base].close()
        code, _, err = await run_cli("simulate", "--base-port", str(base))
        assert code == 2, err
        lines = err.strip().splitlines()
        assert [line.split(":")[1].strip() for line in lines] == ["binanceusdm", "deribit"], err
        assert all(line.endswith("Address already in use") for line in lines), err


def _recording_named(source: Path, target: Path, exchange: str | None) -> Path:
    """`source` with its header's exchange renamed, or its header removed (None)."""
    lines = zstandard.ZstdDecompressor().stream_reader(source.open("rb")).read().splitlines(keepends=True)
    header = orjson.loads(lines[0])
    assert header["t"] == "header"
    head = b"" if exchange is None else orjson.dumps({**header, "exchange": exchange}) + b"\n"
    target.write_bytes(zstandard.ZstdCompressor().compress(head + b"".join(lines[1:])))
    return target


@pytest.mark.parametrize(
    ("venue", "exchange"), [("okx", "BYBIT"), ("bybit", "OKX"), ("binanceusdm", "BINANCE"), ("deribit", "KRAKEN")]
)
async def test_simulate_refuses_a_recording_of_another_venue(venue: str, exchange: str, tmp_path: Path) -> None:
    recording = _recording_named(BYBIT_RECORDING, tmp_path / "rec.jsonl.zst", exchange)
    code, _, err = await run_cli("simulate", "--venue", venue, "--recording", str(recording), "--port", "0")
    assert code == 2
    assert_one_line(err, str(recording), exchange, f"not of {venue}")


@pytest.mark.parametrize(
    ("venue", "source", "exchange"),
    [
        ("binanceusdm", BINANCE_RECORDING, "BINANCE_FUTURES"),  # cryptofeed's name, as recorded
        ("binanceusdm", BINANCE_RECORDING, "BINANCEUSDM"),  # flowgauge's recorder's name
        ("okx", OKX_RECORDING, None),  # no header: served as before, nothing to check
    ],
)
async def test_simulate_accepts_every_name_replay_accepts_for_the_venue(
    venue: str, source: Path, exchange: str | None, tmp_path: Path
) -> None:
    recording = _recording_named(source, tmp_path / "rec.jsonl.zst", exchange)
    port = free_port()
    async with cli("simulate", "--venue", venue, "--recording", str(recording), "--port", str(port)) as proc:
        await wait_for(lambda: _accepts(port) or proc.proc.returncode is not None, "the simulator to listen")
        assert proc.proc.returncode is None, proc.err
        proc.proc.send_signal(signal.SIGTERM)
        assert await proc.finish() == 0, proc.err


# ------------------------------------------------------------------------------------------------ bench


async def test_bench_interrupted_exits_130_after_a_one_line_summary() -> None:
    async with cli("bench", "--quick") as proc:
        await wait_for(lambda: proc.stderr, "bench to report progress")
        shown = len(proc.stderr)
        proc.proc.send_signal(signal.SIGINT)
        assert await proc.finish() == 130, proc.err
    after = proc.stderr[shown:]
    assert "Traceback" not in "".join(after), "".join(after)
    assert after[-1].startswith("bench: interrupted after "), after


# ------------------------------------------------------------------------------------------ run, record


@pytest.mark.parametrize("command", ["run", "record"])
async def test_daemon_exits_0_on_sigint(command: str, tmp_path: Path) -> None:
    # SIGTERM is covered by the end-to-end tests; Ctrl-C must be a clean stop too.
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    config = write_config(tmp_path / "cfg.yaml", sim_port, bus_port, http_port)
    args = ["run", "-c", str(config)] if command == "run" else ["record", str(tmp_path / "rec"), "-c", str(config)]
    sim_args = ["simulate", "--venue", "bybit", "--recording", str(BYBIT_RECORDING), "--port", str(sim_port)]
    with flowgauge(sim_args, tmp_path / "sim.log"), flowgauge(args, tmp_path / "daemon.log") as daemon:
        await wait_for(lambda: _healthy(http_port), "the daemon's /healthz")
        daemon.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(daemon.wait, EXIT_TIMEOUT)
    log = (tmp_path / "daemon.log").read_text()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log


async def _healthy(http_port: int) -> bool:
    code, _ = await http_get(http_port, "/healthz")
    return code == 200
