"""`flowgauge replay` as a user runs it: a real subprocess over real recordings.

Bad files among good ones, an `--out` that cannot be created, a negative `--speed`, Ctrl-C in the middle,
progress on a terminal (a pseudo-terminal from the `pty` module), and the summary line every run ends with.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import orjson
import pytest
import zstandard
from tests.conftest import BYBIT_RECORDING, FIXTURES
from tests.procs import TIMEOUT_FACTOR, wait_for

from flowgauge.app import bar_spec
from flowgauge.config import load_settings
from flowgauge.publish import topics
from flowgauge.recording import Header, iter_records
from flowgauge.replay.progress import SHOW_AFTER_S
from flowgauge.replay.replay import replay

pytestmark = pytest.mark.integration

OKX_RECORDING = FIXTURES / "okx" / "okx-v5-2022-05.jsonl.zst"  # 299 frames, 94 payloads + its bars: quick to replay
BINANCE_RECORDING = FIXTURES / "binanceusdm" / "binance-usdm-ethusdt-2024-08.jsonl.zst"
BARS_ROOT = f"{topics.PREFIX}.bars."
SUMMARY = re.compile(
    r"^replay: (\d+) files?(?: \((\d+) failed\))?, frames=(\d+) ignored=(\d+) published=(\d+) in [\d.]+ s$"
)
INTERRUPTED = re.compile(
    r"^replay interrupted in file (\d+) of (\d+) \((.+)\), frames=(\d+) ignored=\d+ published=(\d+) in [\d.]+ s$"
)


@functools.cache
def okx_topics(config: Path | None = None) -> tuple[str, ...]:
    """The topics `flowgauge replay [-c config] OKX_RECORDING` publishes, in order, from the library replay with the
    config's `publish.bars` (without -c the defaults: 1 s bars, on), as the command runs it."""
    published: list[str] = []
    spec = bar_spec(load_settings(str(config) if config else None, {}))
    replay([OKX_RECORDING], lambda topic, _: published.append(topic), clock=lambda: 0, bars=spec)
    return tuple(published)


def test_okx_recording_publishes_94_payloads_and_its_clock_bars() -> None:
    bars = [topic for topic in okx_topics() if topic.startswith(BARS_ROOT)]
    assert len(okx_topics()) - len(bars) == 94  # book payloads and status: what the tests below were sized on
    assert bars  # a replay closes bars on events, as the daemon does (README "Clock bars")


def run_replay(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowgauge", "replay", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout * TIMEOUT_FACTOR,
    )


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    # The compiled-core notice is the CLI's, not replay's: it is not part of what these tests check.
    return [line for line in result.stderr.splitlines() if not line.startswith("flowgauge: warning:")]


def with_exchange(source: Path, target: Path, exchange: str) -> Path:
    """`source` with its header's exchange renamed: the same frames as another recorder would name them."""
    lines = zstandard.ZstdDecompressor().stream_reader(source.open("rb")).read().splitlines(keepends=True)
    header = orjson.loads(lines[0])
    assert header["t"] == "header"
    header["exchange"] = exchange
    target.write_bytes(zstandard.ZstdCompressor().compress(orjson.dumps(header) + b"\n" + b"".join(lines[1:])))
    return target


def test_binance_usdm_named_by_flowgauge_replays_like_cryptofeeds_name(tmp_path: Path) -> None:
    header = next(iter(iter_records(BINANCE_RECORDING)))
    assert isinstance(header, Header) and header.exchange == "BINANCE_FUTURES"  # cryptofeed's name
    ours = with_exchange(BINANCE_RECORDING, tmp_path / "BINANCEUSDM.jsonl.zst", "BINANCEUSDM")
    theirs: list[tuple[str, bytes]] = []
    mine: list[tuple[str, bytes]] = []
    replay([BINANCE_RECORDING], lambda t, p: theirs.append((t, p)), clock=lambda: 0)
    replay([ours], lambda t, p: mine.append((t, p)), clock=lambda: 0)
    assert len(theirs) > 100
    assert mine == theirs


def test_bad_files_are_named_and_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    alone = run_replay(OKX_RECORDING, "--out", tmp_path / "alone.jsonl")
    assert alone.returncode == 0, alone.stderr
    expected = (tmp_path / "alone.jsonl").read_bytes()
    assert expected.count(b"\n") == len(okx_topics())

    missing = tmp_path / "missing.jsonl.zst"
    corrupt = tmp_path / "corrupt.jsonl.zst"
    corrupt.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))  # zstd magic, then noise
    unknown = with_exchange(OKX_RECORDING, tmp_path / "unknown.jsonl.zst", "KRAKEN")
    no_metadata = tmp_path / "no-metadata.jsonl"
    no_metadata.write_text(
        '{"t":"header","format":2,"exchange":"OKX"}\n'
        '{"t":"connect","conn":"OKX.ws.1","ts":1.0,"addr":"wss://ws.okx.com:8443/ws/v5/public"}\n'
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    bad = [missing, corrupt, unknown, no_metadata, empty]

    out = tmp_path / "out.jsonl"
    result = run_replay(missing, corrupt, OKX_RECORDING, unknown, no_metadata, empty, "--out", out)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = stderr_lines(result)
    skipped = [line for line in lines if line.startswith("replay: skipped ")]
    assert len(skipped) == len(bad)  # one line per bad file, in the order met, each naming it
    for line, path in zip(skipped, bad, strict=True):
        assert line.startswith(f"replay: skipped {path}: "), line
    assert "No such file" in skipped[0]
    assert "zstd" in skipped[1]
    assert "unknown exchange 'KRAKEN'" in skipped[2]
    assert "metadata" in skipped[3]
    assert "no header" in skipped[4]
    # The good file between them was replayed in full, exactly as on its own.
    assert out.read_bytes().count(b"\n") == len(okx_topics())
    assert [_without_ts_publish(x) for x in out.read_bytes().splitlines()] == [
        _without_ts_publish(x) for x in expected.splitlines()
    ]
    summary = SUMMARY.match(lines[-2])
    assert summary is not None, lines[-2]
    assert summary.group(1, 2, 5) == ("6", "5", str(len(okx_topics())))
    assert lines[-1] == f"replay: 5 of 6 files failed: {', '.join(map(str, bad))}"


def _without_ts_publish(line: bytes) -> dict[str, object]:
    message = orjson.loads(line)
    message["payload"].pop("ts_publish")
    return message


def test_out_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "out.jsonl"
    result = run_replay(OKX_RECORDING, "--out", target)
    assert result.returncode == 2
    assert stderr_lines(result) == [f"replay: cannot write --out {target}: No such file or directory"]


def test_a_write_error_on_out_is_one_line_and_stops_the_replay() -> None:
    result = run_replay(OKX_RECORDING, "--out", "/dev/full")  # every write fails: no space left on device
    assert result.returncode == 1
    lines = stderr_lines(result)
    assert lines[0] == "replay: cannot write --out /dev/full: No space left on device"
    assert lines[1].startswith(f"replay stopped in file 1 of 1 ({OKX_RECORDING}), frames="), lines
    assert len(lines) == 2  # not blamed on the recording: no "skipped" line


@pytest.mark.parametrize("speed", ["-1", "-0.5", "nan", "fast"])
def test_speed_must_be_a_non_negative_number(speed: str) -> None:
    result = run_replay(OKX_RECORDING, f"--speed={speed}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "argument --speed" in result.stderr.splitlines()[-1]


def test_a_finished_replay_ends_with_a_one_line_summary(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = run_replay(OKX_RECORDING, "--out", out)
    assert result.returncode == 0
    summary = SUMMARY.match(stderr_lines(result)[-1])
    assert summary is not None, result.stderr
    assert summary.group(1, 2, 3, 4, 5) == ("1", None, "299", "0", str(len(okx_topics())))
    assert [orjson.loads(line)["topic"] for line in out.read_bytes().splitlines()] == list(okx_topics())
    assert "\r" not in result.stderr  # stderr is a pipe here: no progress bar


@pytest.mark.parametrize("bars", [{"interval_s": 2.0}, {"enabled": False}], ids=["2s", "off"])
def test_replay_writes_the_clock_bars_of_the_configs_publish_bars(tmp_path: Path, bars: dict[str, object]) -> None:
    config = tmp_path / "bars.yaml"
    symbols: set[str] = set()  # the config lists every instrument the recording holds (-c replays only those)
    replay([OKX_RECORDING], lambda _, payload: symbols.add(orjson.loads(payload)["symbol"]), clock=lambda: 0)
    venues = {"okx": {"symbols": sorted(symbols)}}
    config.write_text(orjson.dumps({"venues": venues, "publish": {"bars": bars}}).decode())  # JSON is YAML
    out = tmp_path / "out.jsonl"
    result = run_replay(OKX_RECORDING, "-c", config, "--out", out)
    assert result.returncode == 0, result.stderr
    written = [orjson.loads(line)["topic"] for line in out.read_bytes().splitlines()]
    assert written == list(okx_topics(config))
    n_bars = len([topic for topic in written if topic.startswith(BARS_ROOT)])
    default_bars = len([topic for topic in okx_topics() if topic.startswith(BARS_ROOT)])
    assert (n_bars == 0) if bars.get("enabled") is False else (0 < n_bars < default_bars)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# A script's background job starts with SIGINT ignored (CI runners do this): the contract holds there too.
@pytest.mark.parametrize("started_ignoring_sigint", [False, True], ids=["foreground", "background-job"])
async def test_ctrl_c_stops_a_replay_with_a_summary_and_exit_130(tmp_path: Path, started_ignoring_sigint: bool) -> None:
    out = tmp_path / "out.jsonl"
    # At recorded pace the Bybit fixture lasts 42 s: it is still running when Ctrl-C arrives, the OKX file
    # after it not started.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowgauge", "replay", str(BYBIT_RECORDING), str(OKX_RECORDING),
        "--speed", "1", "--out", str(out),
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_ignore_sigint if started_ignoring_sigint else None,
    )
    try:
        await wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 3, "payloads written")
        assert proc.returncode is None
        proc.send_signal(signal.SIGINT)
        _, raw_stderr = await asyncio.wait_for(proc.communicate(), 20 * TIMEOUT_FACTOR)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = raw_stderr.decode()
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("flowgauge: warning:")]
    assert len(lines) == 1, stderr  # stderr is not a terminal: no progress, only the summary
    interrupted = INTERRUPTED.match(lines[0])
    assert interrupted is not None, lines[0]
    at, total, path, frames, published = interrupted.groups()
    assert (at, total, path) == ("1", "2", str(BYBIT_RECORDING))
    assert 0 < int(frames) < 1996
    assert int(published) == out.read_bytes().count(b"\n") >= 3  # every payload counted was written whole


async def test_sigterm_stops_a_replay_like_ctrl_c_with_exit_143(tmp_path: Path) -> None:
    # Before: SIGTERM killed the replay on the spot (exit 143 from the kernel): no summary, and --out lost
    # whatever was still buffered or ended mid-line.
    out = tmp_path / "out.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowgauge", "replay", str(BYBIT_RECORDING), str(OKX_RECORDING),
        "--speed", "1", "--out", str(out),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 3, "payloads written")
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        _, raw_stderr = await asyncio.wait_for(proc.communicate(), 20 * TIMEOUT_FACTOR)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = raw_stderr.decode()
    assert proc.returncode == 143
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("flowgauge: warning:")]
    assert len(lines) == 1, stderr
    terminated = re.match(
        r"^replay terminated in file 1 of 2 \((.+)\), frames=(\d+) ignored=\d+ published=(\d+) in [\d.]+ s$", lines[0]
    )
    assert terminated is not None, lines[0]
    path, frames, published = terminated.groups()
    assert path == str(BYBIT_RECORDING)
    assert 0 < int(frames) < 1996
    written = out.read_bytes()
    assert written.endswith(b"\n")
    assert int(published) == written.count(b"\n") >= 3  # every payload counted is in --out, whole
    for line in written.splitlines():
        orjson.loads(line)


def test_a_file_cut_short_says_how_many_payloads_it_published(tmp_path: Path) -> None:
    whole = OKX_RECORDING.read_bytes()
    truncated = tmp_path / "truncated.jsonl.zst"
    truncated.write_bytes(whole[: len(whole) // 2])  # a recorder killed mid-write
    out = tmp_path / "out.jsonl"
    result = run_replay(truncated, "--out", out)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = stderr_lines(result)
    published = out.read_bytes().count(b"\n")
    assert published > 0  # the file's first half was replayed and published before it ended
    # Not "skipped": its payloads were published (and written). The line says how far it got and why it stopped.
    assert lines[0].startswith(f"replay: {truncated} stopped after {published} payloads: line "), lines
    assert "truncated" in lines[0]
    assert not any("skipped" in line for line in lines), lines
    summary = SUMMARY.match(lines[-2])
    assert summary is not None, lines
    assert summary.group(1, 2, 5) == ("1", "1", str(published))
    assert lines[-1] == f"replay: 1 of 1 files failed: {truncated}"


async def test_progress_shows_on_a_terminal_for_a_long_replay() -> None:
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))  # a terminal has a size
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flowgauge", "replay", str(BYBIT_RECORDING), "--speed", "1",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=secondary,
    )
    os.close(secondary)
    seen = bytearray()
    started = time.monotonic()

    def read_terminal() -> str:
        # The terminal's output so far: waits at most 0.2 s for more, never blocks on a silent terminal.
        if select.select([main], [], [], 0.2)[0]:
            with contextlib.suppress(OSError):  # EIO: every writer closed the terminal
                seen.extend(os.read(main, 65536))
        return seen.decode(errors="replace")

    bar = re.compile(
        r"1/1 bybit-linear-2026-08\.jsonl\.zst: +\d+%.*\| [\d.]+k?/[\d.]+k? .*"  # bytes read / size
        r"at 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC frames=\d+ payloads=\d+"
    )
    try:
        await wait_for(lambda: bar.search(read_terminal()), "a progress bar: file, position, frames, payloads")
        shown_after = time.monotonic() - started
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 20 * TIMEOUT_FACTOR)
        await wait_for(lambda: "replay interrupted" in read_terminal(), "the summary line")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(main)
    assert proc.returncode == 130
    assert shown_after >= SHOW_AFTER_S  # a short replay never shows a bar
    screen = [line.strip() for line in seen.decode(errors="replace").replace("\r", "\n").splitlines()]
    last = [line for line in screen if line][-1]
    assert INTERRUPTED.match(last), last  # the bar is cleared before the summary
