"""`flowgauge soak` orchestration: start the simulators and the daemon, check payloads, print the figures.

See `flowgauge.soak` for the shape of a run. This module owns the command's arguments, the two child processes
(started with this interpreter: `python -m flowgauge.soak.sims`, `python -m flowgauge.soak.child`), the daemon
config it writes for them, the progress lines and the summary. The exit status is 0 when the run met every bound
(no wrong payload, no crash, RSS growth after the warm-up under `MAX_GROWTH`, judged on the robust trend of
every RSS sample after the warm-up (`trend_growth`) and only when at least `MIN_JUDGED_MINUTES` followed it), 1
when it did not, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from flowgauge.simulate import DATA_DIR, SIMULATORS
from flowgauge.soak.check import PayloadChecker, run_rounds
from flowgauge.soak.tapes import replica_coin, replicate_recording

__all__ = ["MAX_GROWTH", "TrendSamples", "add_arguments", "execute", "median_growth", "trend_growth"]

MAX_GROWTH = 0.02  # RSS growth after the warm-up, as a fraction of the RSS after the warm-up
MIN_JUDGED_MINUTES = 10.0  # growth is judged only over at least this long after the warm-up
# Growth is judged on the trend of every sample (`trend_growth`), not on two single samples nor on two minutes'
# medians (both still printed): RSS swings a few MB with what the books hold at that moment, and the soak's
# connection-wide faults empty the windows of all 50 Bybit books every few minutes, so one minute's median
# measured where such a dip fell (the minute after the warm-up fell in one in two runs out of two).
MEDIAN_OVER_S = 60.0
REPORT_EVERY_S = 5.0  # the daemon child's report period
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
TRUTH_CAPACITY = 5000  # truth records a simulator keeps per instrument: over a minute at the default speed

WS_PATHS = {
    "bybit": "/v5/public/linear",
    "binanceusdm": "",
    "okx": "/ws/v5/public",
    "deribit": "/ws/api/v2",
    "hyperliquid": "/ws",
}
# The instruments of the venues served from their packaged recordings (as config/offline-demo.yaml).
PACKAGED_SYMBOLS = {
    "binanceusdm": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
    "okx": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
    "deribit": ["BTC/USD:BTC", "ETH/USD:ETH"],
    "hyperliquid": ["BTC/USDC:USDC", "ETH/USDC:USDC"],
}
# Venue size units of the served instruments in base units, where they are not 1 (OKX: contracts of ctVal).
SIZE_FACTORS = {"okx": {"BTC/USDT:USDT": 0.01, "ETH/USDT:USDT": 0.1}}
# Every kind of the fault framework (flowgauge.simulate.faults) each venue injects, each every few seconds to a
# few minutes. The faults aimed at one book take the venue's books in turn (`rotate=1`: otherwise the first book
# played took them all); the others hit whichever book's message comes next (a connection fault reaches every
# book of the connection anyway). Bybit, with most of the books, gets this schedule (together a fault every
# ~2 s); the other venues, two books each, every interval times OTHER_SLOWER.
FAULT_SCHEDULE = (
    "drop_diff:every_s=4,rotate=1",
    "duplicate_diff:every_s=5,rotate=1",
    "reorder_diff:every_s=7,rotate=1",
    "seq_gap:every_s=11,rotate=1",
    "malformed_json:every_s=13,rotate=1",
    "bad_checksum:every_s=15,rotate=1",
    "truncated_frame:every_s=17,rotate=1",
    "slow_snapshot:every_s=23,delay_s=2,rotate=1",
    "u1_restart:every_s=29,rotate=1",
    "rate_limit:every_s=61,retry_after=1",
    "disconnect:every_s=67",
    "sub_error:every_s=97,rotate=1",
    "forced_disconnect:every_s=131",
    "half_open:every_s=173,for_s=12",
    "clock_skew:after_s=120,every_s=240,seconds=3",
    "clock_skew:after_s=240,every_s=240,seconds=0",
    "clock_jump:after_s=60,every_s=240,seconds=5",
    "clock_jump:after_s=180,every_s=240,seconds=-5",
    "conn_limit:every_s=229,refuse=2",
    "oversized_frame:every_s=307,rotate=1",
)
OTHER_SLOWER = 2.0


def venue_faults(venue: str) -> list[str]:
    """`FAULT_SCHEDULE` for `venue`: the kinds its simulator injects, slower on the venues with two books."""
    from flowgauge.simulate.base import simulator_class

    importlib.import_module(SIMULATORS[venue].module)
    supported = simulator_class(SIMULATORS[venue].module).SUPPORTED_FAULTS
    out = []
    for text in FAULT_SCHEDULE:
        kind, _, rest = text.partition(":")
        if kind not in supported:
            continue
        if venue != "bybit":
            keys = []
            for item in rest.split(","):
                key, _, value = item.partition("=")
                keys.append(f"{key}={float(value) * OTHER_SLOWER:g}" if key in ("every_s", "after_s") else item)
            rest = ",".join(keys)
        out.append(f"{kind}:{rest}")
    return out


# Not settings: which core runs, and the daemon child's tracemalloc hook (soak.child, for finding what grows).
_PASSED_ON = frozenset({"FLOWGAUGE_CORE", "FLOWGAUGE_SOAK_TRACEMALLOC", "FLOWGAUGE_SOAK_HEAPSTATS"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--minutes",
        type=_positive,
        default=15.0,
        metavar="N",
        help="length of the run (default 15: the warm-up, then 10 measured minutes)",
    )
    parser.add_argument(
        "--warmup-minutes",
        type=_non_negative,
        default=5.0,
        metavar="N",
        help="RSS growth is measured from here to the end (default 5: the 5-minute OI window)",
    )
    parser.add_argument(
        "--replicas",
        type=_count,
        default=25,
        metavar="N",
        help="copies of Bybit's recording (2 instruments each) under new coin names (default 25: "
        "50 Bybit books, 58 in all)",
    )
    parser.add_argument(
        "--speed",
        type=_positive,
        default=4.0,
        metavar="X",
        help="every simulator's speed: recorded gaps divided by X (default 4)",
    )
    parser.add_argument("--no-faults", action="store_true", help="serve every venue clean (a baseline)")
    parser.add_argument(
        "--dir",
        default=None,
        metavar="DIR",
        help="where the recordings, configs and the children's logs go (default: a new temp dir)",
    )
    parser.add_argument(
        "--every", type=_positive, default=60.0, metavar="S", help="seconds between progress lines (default 60)"
    )


def execute(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the soak `args` describe; `environ` is passed on to the children without FLOWGAUGE_* settings (the
    daemon's config is the soak's own; FLOWGAUGE_CORE passes)."""
    if args.warmup_minutes >= args.minutes:
        print(
            f"soak: --warmup-minutes ({args.warmup_minutes:g}) must be below --minutes ({args.minutes:g})",
            file=sys.stderr,
        )
        return 2
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="flowgauge-soak-"))
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"soak: cannot use --dir {args.dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    env = {k: v for k, v in environ.items() if not k.startswith("FLOWGAUGE_") or k in _PASSED_ON}
    return asyncio.run(_Soak(args, workdir, env).run())


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 99:
        raise argparse.ArgumentTypeError(f"must be 1..99, got {value}")
    return value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


@dataclass
class TrendSamples:
    """(t, RSS KiB) of every `stride`-th sample offered, for `trend_growth`: when `TREND_SAMPLES` are held, every
    other one goes and the stride doubles, so the kept samples stay evenly spread over the whole run."""

    kept: list[tuple[float, int]] = field(default_factory=list)
    stride: int = 1
    offered: int = 0

    def add(self, t: float, rss_kib: int) -> None:
        if self.offered % self.stride == 0:
            self.kept.append((t, rss_kib))
            if len(self.kept) >= TREND_SAMPLES:
                del self.kept[1::2]  # the kept ones are now 2 * stride samples apart
                self.stride *= 2
        self.offered += 1


@dataclass
class _Samples:
    first: dict[str, Any] | None = None
    warm: dict[str, Any] | None = None
    last: dict[str, Any] | None = None  # the last line before the stop was asked
    final: dict[str, Any] | None = None
    crash: str | None = None
    loads: dict[str, str] = field(default_factory=dict)
    warm_rss: list[int] = field(default_factory=list)  # RSS (KiB) over the `MEDIAN_OVER_S` from the warm-up's end
    after_warm: TrendSamples = field(default_factory=lambda: TrendSamples())  # RSS from the warm-up's end
    end_rss: deque[int] = field(default_factory=lambda: deque(maxlen=int(MEDIAN_OVER_S / REPORT_EVERY_S)))


# Samples kept for the trend: a 16-minute run keeps all of its ~130, a longer one every 2^k-th report.
TREND_SAMPLES = 512
TREND_MIN_PAIR_S = 60.0  # pairs of samples closer than this carry the sawtooth, not the trend


def trend_growth(samples: list[tuple[float, int]]) -> float | None:
    """RSS growth over `samples` ((t, RSS) after the warm-up) as their robust linear trend: the Theil-Sen slope
    (the median of the slopes between every two samples at least `TREND_MIN_PAIR_S` apart) times the span, over
    the trend's value at the first sample. Periodic swings (the windows of 50 books emptied by a connection-wide
    fault and refilled) and where they fall do not move it; a leak does. None with fewer than two such pairs."""
    slopes = [
        (r1 - r0) / (t1 - t0)
        for i, (t0, r0) in enumerate(samples)
        for t1, r1 in samples[i + 1 :]
        if t1 - t0 >= TREND_MIN_PAIR_S
    ]
    if len(slopes) < 2:
        return None
    slope = statistics.median(slopes)
    start = samples[0][0]
    level = statistics.median(r - slope * (t - start) for t, r in samples)  # the trend's value at `start`
    return slope * (samples[-1][0] - start) / level if level > 0 else None


def median_growth(warm_rss: list[int], end_rss: list[int]) -> float | None:
    """RSS growth from the median of `warm_rss` to the median of `end_rss`; None when either is empty."""
    if not warm_rss or not end_rss:
        return None
    warm = statistics.median(warm_rss)
    return (statistics.median(end_rss) - warm) / warm


class _Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> None:
        self.args = args
        self.env = env
        self.dir = workdir
        self.duration_s = args.minutes * 60.0
        self.warmup_s = args.warmup_minutes * 60.0
        self.samples = _Samples()
        self.stopping = False
        self.started = 0.0  # monotonic, when the daemon started
        self.sims: asyncio.subprocess.Process | None = None
        self.daemon: asyncio.subprocess.Process | None = None
        self.sims_report: dict[str, Any] = {}
        self.checker: PayloadChecker | None = None

    # -- setup ----------------------------------------------------------------------------------------

    def _bybit_symbols(self) -> list[str]:
        return [f"{replica_coin(coin, k)}/USDT:USDT" for k in range(self.args.replicas) for coin in ("BTC", "ETH")]

    def _plan(self, bybit_recording: Path) -> list[dict[str, Any]]:
        faults = not self.args.no_faults
        plan: list[dict[str, Any]] = []
        for venue in ("bybit", *PACKAGED_SYMBOLS):
            recording = bybit_recording if venue == "bybit" else DATA_DIR / SIMULATORS[venue].recording
            plan.append(
                {
                    "venue": venue,
                    "recording": str(recording),
                    "speed": self.args.speed,
                    "faults": venue_faults(venue) if faults else [],
                    "truth_capacity": TRUTH_CAPACITY,
                }
            )
        return plan

    def _config(self, ports: dict[str, int], bus_port: int, http_port: int) -> dict[str, Any]:
        venues: dict[str, Any] = {}
        for venue, port in ports.items():
            venues[venue] = {
                "symbols": self._bybit_symbols() if venue == "bybit" else PACKAGED_SYMBOLS[venue],
                "ws_url": f"ws://127.0.0.1:{port}{WS_PATHS[venue]}",
                "rest_url": f"http://127.0.0.1:{port}",
                "stale_after_s": 10,
            }
        return {
            "venues": venues,
            "bus": {"embedded": {"enabled": True, "host": "127.0.0.1", "port": bus_port}},
            "http": {"host": "127.0.0.1", "port": http_port},
            # One payload per book message: what the truth comparison assumes (and the heaviest publish load).
            "publish": {"min_interval_ms": 0, "conflate": "off"},
            "log_level": "WARNING",
            "shutdown_timeout_s": 5,
        }

    async def _start_sims(self) -> dict[str, int]:
        recording = self.dir / "bybit-replicated.jsonl.zst"
        source = DATA_DIR / SIMULATORS["bybit"].recording
        await asyncio.to_thread(replicate_recording, source, recording, self.args.replicas)
        plan_path = self.dir / "sims.json"
        plan_path.write_bytes(orjson.dumps(self._plan(recording), option=orjson.OPT_INDENT_2))
        with (self.dir / "sims.log").open("wb") as log:
            self.sims = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "flowgauge.soak.sims",
                str(plan_path),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=self.env,
                start_new_session=True,  # a terminal's Ctrl-C reaches the soak, which stops its children in order
            )
        assert self.sims.stdout is not None
        line = await asyncio.wait_for(self.sims.stdout.readline(), STARTUP_TIMEOUT_S)
        if not line:
            raise _SoakFailed(f"the simulators did not start (see {self.dir / 'sims.log'})")
        ports: dict[str, int] = orjson.loads(line)["ready"]
        return ports

    async def _start_daemon(self, ports: dict[str, int]) -> tuple[int, int]:
        import yaml

        bus_port, http_port = _free_port(), _free_port()
        config = self.dir / "daemon.yaml"
        config.write_text(yaml.safe_dump(self._config(ports, bus_port, http_port), sort_keys=False))
        env = {**self.env, "FLOWGAUGE_LOG_LEVEL": "WARNING"}
        with (self.dir / "daemon.log").open("wb") as log:
            self.daemon = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "flowgauge.soak.child",
                str(config),
                "--every",
                str(REPORT_EVERY_S),
                "--warmup",
                str(self.warmup_s),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        self.started = time.monotonic()
        return bus_port, http_port

    # -- running --------------------------------------------------------------------------------------

    async def _read_daemon(self) -> None:
        assert self.daemon is not None and self.daemon.stdout is not None
        # Every report line is kept in the run's directory too (an RSS curve to read after the run): 5-second
        # lines, a few hundred bytes each, so ~70 KiB per hour.
        with (self.dir / "reports.jsonl").open("ab") as reports:
            while line := await self.daemon.stdout.readline():
                reports.write(line)
                self._on_report(line)

    def _on_report(self, line: bytes) -> None:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if "crash" in record:
            self.samples.crash = record["crash"]
            return
        if record.get("final"):
            self.samples.final = record
            return
        if self.samples.first is None:
            self.samples.first = record
            self.samples.loads["start"] = _load()
        if self.samples.warm is None and record["t"] >= self.warmup_s:
            self.samples.warm = record
            self.samples.loads["warm"] = _load()
        if not self.stopping:
            self.samples.last = record
            rss = record.get("rss_kib")
            if rss is not None:
                self.samples.end_rss.append(rss)
                if self.warmup_s <= record["t"] < self.warmup_s + MEDIAN_OVER_S:
                    self.samples.warm_rss.append(rss)
                if record["t"] >= self.warmup_s:
                    self.samples.after_warm.add(record["t"], rss)

    async def _subscribe(self, bus_port: int, checker: PayloadChecker) -> None:
        from flowgauge.client import SubscriberError
        from flowgauge.sdk import Interrupted, subscribe

        url = f"ws://127.0.0.1:{bus_port}"
        while True:
            try:
                async with subscribe(url, "flowgauge.v1.>", reconnect=True, queue_size=100_000) as sub:
                    async for msg in sub:
                        if isinstance(msg, Interrupted):
                            checker.on_interrupted()
                        else:
                            checker.on_message(msg.topic, msg.payload, msg.snapshot)
            except SubscriberError:
                await asyncio.sleep(0.5)  # the daemon is not listening yet

    def _progress(self) -> None:
        last = self.samples.last
        checker = self.checker
        if last is None or checker is None:
            return
        c = checker.counts
        print(
            f"soak: {last['t'] / 60:5.1f} min  frames {last['frames']:>9}  published {last['published']:>9}  "
            f"checked {c.checked:>8}  wrong {c.wrong}  resyncs {last['resyncs']}  books {last['states']}  "
            f"rss {_mib(last['rss_kib'])}  lag p99 {last['lag']['p99_ms']} ms  load {_load()}",
            flush=True,
        )

    async def run(self) -> int:
        print(
            f"soak: {self.args.minutes:g} min (warm-up {self.args.warmup_minutes:g}), "
            f"{2 * self.args.replicas + 8} books on 5 venues, speed {self.args.speed:g}, "
            f"faults {'off' if self.args.no_faults else 'on'}; files in {self.dir}",
            flush=True,
        )
        stop_checks = asyncio.Event()
        # SIGINT, SIGTERM or SIGHUP (the terminal went away) ends the run early, with its figures and both children
        # stopped (the default action killed this process alone and left the simulators and the daemon running).
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, interrupted.set)
        try:
            ports = await self._start_sims()
            self.checker = PayloadChecker(
                {venue: f"http://127.0.0.1:{port}" for venue, port in ports.items()}, SIZE_FACTORS
            )
            bus_port, _ = await self._start_daemon(ports)
        except (_SoakFailed, TimeoutError, OSError) as exc:
            await self._stop_children()
            print(f"soak: {exc or 'timed out starting'}", file=sys.stderr)
            return 1
        assert self.daemon is not None
        tasks = [
            asyncio.create_task(self._read_daemon(), name="soak-daemon-lines"),
            asyncio.create_task(self._subscribe(bus_port, self.checker), name="soak-subscriber"),
            asyncio.create_task(run_rounds(self.checker, 1.0, stop_checks), name="soak-checker"),
        ]
        daemon_exit = asyncio.ensure_future(self.daemon.wait())
        signalled = asyncio.ensure_future(interrupted.wait())
        next_progress = self.started + self.args.every
        try:
            while (now := time.monotonic()) < self.started + self.duration_s and not (
                daemon_exit.done() or interrupted.is_set()
            ):
                await asyncio.wait(
                    [daemon_exit, signalled],
                    timeout=min(1.0, self.started + self.duration_s - now),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if time.monotonic() >= next_progress:
                    next_progress += self.args.every
                    self._progress()
            crashed = daemon_exit.done()
            self.samples.loads["end"] = _load()
            cpu = _cpu_seconds(self.daemon.pid)
            elapsed = time.monotonic() - self.started
            self.stopping = True
            await self._stop_children()
            await asyncio.wait_for(tasks[0], STOP_TIMEOUT_S)
            tasks[1].cancel()
            stop_checks.set()
            await asyncio.wait_for(tasks[2], STOP_TIMEOUT_S)
        finally:
            signalled.cancel()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._stop_children()  # also when interrupted: no child outlives the soak
        status = self._summary(crashed or self.daemon.returncode != 0, cpu, elapsed)
        if interrupted.is_set():
            print(f"soak: interrupted after {elapsed / 60:.1f} of {self.args.minutes:g} min", flush=True)
            return 1
        return status

    async def _stop_children(self) -> None:
        for proc in (self.daemon, self.sims):
            if proc is None or proc.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            if proc is self.sims and proc.stdout is not None:
                with contextlib.suppress(orjson.JSONDecodeError):
                    rest = (await proc.stdout.read()).strip().splitlines()
                    self.sims_report = orjson.loads(rest[-1]) if rest else {}

    # -- the figures ----------------------------------------------------------------------------------

    def _summary(self, crashed: bool, cpu_s: float | None, elapsed_s: float) -> int:
        s = self.samples
        assert self.checker is not None
        c = self.checker.counts
        end = s.last
        crashes = 1 if crashed or s.crash is not None else 0
        lines = [f"soak: done after {elapsed_s / 60:.1f} min; files in {self.dir}"]
        if end is not None:
            lines += [
                f"  messages processed   {end['frames']} venue frames ({end['frames'] / max(end['t'], 1e-9):.0f}/s), "
                f"{end['published']} payloads published ({end['published'] / max(end['t'], 1e-9):.0f}/s), "
                f"{end['books']} books, {end['core']} core",
                f"  resyncs              {end['resyncs']} (sequence gaps {end['gaps']}, "
                f"bad frames {end['bad_frames']}, reconnects {end['reconnects']}); books at the end {end['states']}",
            ]
        lines += [
            f"  wrong payloads       {c.wrong} (of {c.checked} VALID book payloads compared with the truth, ofi on "
            f"{c.ofi_checked}; {c.crossed} crossed; {c.not_checked} more checked for crossing only)",
            f"  subscriber           {c.received} payloads received, {c.missed} missed (publish seq gaps), "
            f"{c.unverified} ofi unverifiable after a gap, {c.restated} states restated by a snapshot (flow reset, "
            f"ofi null), {c.interruptions} reconnects; truth records "
            f"{c.truth_records}, truth gaps {c.truth_gaps}, truth fetch errors {c.truth_fetch_errors}"
            + (f" (first: {c.first_fetch_error})" if c.first_fetch_error else "")
            + (f", {c.waited_out} payloads dropped unchecked after waiting for truth" if c.waited_out else ""),
            f"  crashes              {crashes}" + (f": {s.crash.strip().splitlines()[-1]}" if s.crash else ""),
        ]
        growth: float | None = None
        judged = False
        if s.first is not None and s.warm is not None and end is not None:
            single = (end["rss_kib"] - s.warm["rss_kib"]) / s.warm["rss_kib"]
            medians = median_growth(s.warm_rss, list(s.end_rss))
            growth = trend_growth(s.after_warm.kept)
            measured_min = (end["t"] - s.warm["t"]) / 60.0
            judged = growth is not None and measured_min >= MIN_JUDGED_MINUTES - 0.1
            median_text = (
                f"{medians:+.2%} (median {_mib(int(statistics.median(s.warm_rss)))} over the minute after the "
                f"warm-up, {_mib(int(statistics.median(s.end_rss)))} over the last minute)"
                if medians is not None
                else "not measured"
            )
            trend_text = f"{growth:+.2%}" if growth is not None else "not measured"
            lines.append(
                f"  RSS                  start {_mib(s.first['rss_kib'])} (t={s.first['t']:.0f} s), after warm-up "
                f"{_mib(s.warm['rss_kib'])} (t={s.warm['t']:.0f} s), end {_mib(end['rss_kib'])} (t={end['t']:.0f} s); "
                f"growth over the {measured_min:.1f} min after the warm-up, judged on the trend of every sample "
                f"(Theil-Sen): {trend_text}"
                + ("" if judged else f" (not judged: needs >= {MIN_JUDGED_MINUTES:g} min)")
                + f"; medians {median_text}; single samples {single:+.2%}"
            )
        elif end is not None:
            lines.append(
                f"  RSS                  start {_mib(s.first['rss_kib'] if s.first else None)}, end "
                f"{_mib(end['rss_kib'])} (the run ended before the warm-up did: growth not measured)"
            )
        if end is not None:
            lag, settled = end["lag_run"], end["lag_after_warmup"]
            lines.append(
                f"  event-loop lag       p99 {lag['p99_ms']} ms, p50 {lag['p50_ms']} ms, "
                f"max {lag['max_ms']} ms (whole run); after the warm-up p99 {settled['p99_ms']} ms, "
                f"max {settled['max_ms']} ms"
            )
        cpu = f"{cpu_s / elapsed_s:.0%} of a core" if cpu_s is not None and elapsed_s > 0 else "?"
        lines.append(
            f"  machine              {os.cpu_count()} CPUs, load average (1/5/15 min) at start "
            f"{s.loads.get('start', '?')}, after warm-up {s.loads.get('warm', '?')}, end "
            f"{s.loads.get('end', '?')}; the daemon used {cpu}"
        )
        fired: dict[str, dict[str, int]] = self.sims_report.get("faults", {})
        by_kind: dict[str, int] = {}
        for kinds in fired.values():
            for kind, count in kinds.items():
                by_kind[kind] = by_kind.get(kind, 0) + count
        by_venue = {venue: sum(kinds.values()) for venue, kinds in fired.items()}
        lines.append(
            f"  faults injected      {sum(by_kind.values())} ({len(by_kind)} kinds; by venue {by_venue}; "
            f"by kind {dict(sorted(by_kind.items(), key=lambda item: -item[1]))})"
        )
        repeated = self.sims_report.get("truth_repeated")
        if repeated is not None:
            # Truth keyed like a record still held: the checker could match such a payload with the wrong state.
            # Bybit's u=1 restarts repeat ids by design; a venue keyed by time must show 0.
            lines.append(f"  truth keys repeated  {repeated}")
        if c.wrong:
            lines.append(
                f"  wrong by venue       {c.wrong_by_venue}; the first {len(c.wrong_examples)} in {self.dir}/wrong.txt"
            )
            (self.dir / "wrong.txt").write_text("\n".join(c.wrong_examples) + "\n")
            for kind, count in sorted(c.wrong_by_kind.items(), key=lambda item: -item[1])[:5]:
                lines.append(f"  wrong kind           {count} x {kind}")
        for example in c.wrong_examples[:5]:
            lines.append(f"  WRONG: {example}")
        print("\n".join(lines), flush=True)
        failed = c.wrong > 0 or crashes > 0 or (judged and growth is not None and growth >= MAX_GROWTH)
        print(f"soak: {'FAILED' if failed else 'passed'}", flush=True)
        return 1 if failed else 0


class _SoakFailed(Exception):
    """The soak could not run (a child did not start): one line."""
