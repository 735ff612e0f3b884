"""Command line entry point `flowgauge`: run, record, replay, export, simulate, tail, check-config, bench, bench-bus,
soak.

The only place that calls `asyncio.run` and the only place that reads `os.environ`.
Exit codes: 0 success, 1 runtime failure, 2 bad configuration or arguments (one line on stderr, no traceback).
Long-running commands (run, record, simulate, tail) exit 0 on SIGINT or SIGTERM; batch commands (replay, bench,
bench-bus, soak) exit 130 on SIGINT after a one-line summary (replay: 143 on SIGTERM, likewise). A dependency of the
daemon missing (a client-only install) is one line naming it, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn

from flowgauge.simulate import DATA_DIR, SIMULATORS


class _Parser(argparse.ArgumentParser):
    """argparse, except that a bad argument is one line on stderr (exit 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flowgauge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the installed flowgauge version and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", help="YAML config file, or a built-in one by name: default, offline-demo "
                                            "(default: $FLOWGAUGE_CONFIG, else the built-in default)")
    run.add_argument("--record", metavar="DIR", help="record raw frames to DIR (jsonl.zst, rotated)")

    record = commands.add_parser("record", help="run the daemon and record raw frames (same as run --record DIR)")
    record.add_argument("record", metavar="DIR", help="directory for the recordings (jsonl.zst, rotated)")
    record.add_argument("-c", "--config", help="YAML config file, or a built-in one by name: default, "
                                               "offline-demo (default: $FLOWGAUGE_CONFIG, else the built-in default)")

    replay = commands.add_parser("replay", help="run the pipeline over recorded sessions")
    from flowgauge.replay.command import add_arguments as add_replay_arguments

    add_replay_arguments(replay)

    export = commands.add_parser("export", help="replay recordings to a Parquet dataset: one row per payload, or "
                                                "per clock bar (needs pyarrow: the 'research' extra)")
    from flowgauge.replay.export import add_arguments as add_export_arguments

    add_export_arguments(export)

    simulate = commands.add_parser("simulate", help="serve a recording over the venue's protocol on loopback")
    simulate.add_argument("--venue", default="all", choices=[*SIMULATORS, "all"],
                          help="which venue to serve (default: all five, on consecutive ports)")
    simulate.add_argument("--base-port", type=_port, default=None,
                          help="with --venue all: venues listen on BASE, BASE+1, ... in the order bybit, "
                               "binanceusdm, okx, deribit, hyperliquid (default: 9780...)")
    simulate.add_argument("--recording", default=None, help="default: the packaged sample for the venue")
    simulate.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    simulate.add_argument("--port", type=_port, default=None, help="default: where config/offline-demo.yaml looks")
    simulate.add_argument("--speed", type=_non_negative_float, default=1.0, metavar="N",
                          help="recorded gaps divided by N; exchange time still follows the wall clock, so a window "
                               "holds N times the recorded activity (0 = as fast as clients read, exchange time "
                               "keeping the recorded spacing; default 1)")
    simulate.add_argument("--no-loop", action="store_true", help="stop streaming when the recording ends")
    simulate.add_argument("--garbage-every", type=_positive_int, default=None, metavar="N",
                          help="inject a malformed frame after every N data frames")
    simulate.add_argument("--gap-every", type=_positive_int, default=None, metavar="N",
                          help="drop every N-th book delta per topic (a sequence gap)")
    simulate.add_argument("--clock-skew", type=_finite_float, default=0.0, metavar="S",
                          help="the venue's exchange clock runs S seconds ahead of the wall clock (negative: "
                               "behind); every timestamp it serves, REST answers included (default 0)")
    simulate.add_argument("--fault", action="append", default=[], metavar="KIND[:key=value,...]",
                          help="inject a fault (repeatable), e.g. drop_diff:every=50,instrument=BTCUSDT; keys: "
                               "instrument, venue, after_s, after_frames, every, every_s, count and the kind's "
                               "parameters (kinds and keys: flowgauge.simulate.faults)")
    simulate.add_argument("--scenario", default=None, metavar="FILE.yaml",
                          help="inject the faults listed in a YAML scenario file (same keys, plus fault: KIND)")
    simulate.add_argument("--truth-capacity", type=_non_negative_int, default=None, metavar="N",
                          help="ground-truth records kept per instrument, served at /_flowgauge/truth "
                               "(default 10000; 0 = off)")
    simulate.add_argument("--delist", action="append", default=[], metavar="ID@T",
                          help="the venue delists instrument ID (its own id, e.g. BTCUSDT) at T: unix seconds, or "
                               "+S seconds after start; repeatable (binanceusdm, bybit, deribit; "
                               "see simulate.lifecycle)")
    simulate.add_argument("--expire", action="append", default=[], metavar="ID@T",
                          help="like --delist, but announced: the metadata carries T as the contract's delivery "
                               "time from the start (binanceusdm, bybit, deribit)")

    tail = commands.add_parser("tail", help="show what the bus publishes: a live table, or JSON lines")
    tail.add_argument("pattern", nargs="?", default="flowgauge.v1.>",
                      help="NATS-style topic pattern: * one token, > the rest (default: flowgauge.v1.>)")
    tail.add_argument("--url", default="ws://127.0.0.1:8765",
                      help="the bus: ws:// or wss:// (the daemon's embedded bus, default ws://127.0.0.1:8765), "
                           "nats:// or tls:// (NATS), redis:// or rediss:// (Redis)")
    tail.add_argument("--token", default=os.environ.get("FLOWGAUGE_BUS__EMBEDDED__TOKEN"),
                      help="the embedded bus's bearer token, a NATS token or a Redis password "
                           "(default: $FLOWGAUGE_BUS__EMBEDDED__TOKEN)")
    tail.add_argument("--json", action="store_true", dest="json_lines",
                      help="print payloads as JSON lines even on a terminal (always so when stdout is not one)")
    tail.add_argument("-n", "--count", type=_non_negative_int, default=0,
                      help="exit after N messages (0 = never)")
    tail.add_argument("--quiet-after", type=_non_negative_float, default=5.0, metavar="S",
                      help="say so on stderr if nothing matched within S seconds, then keep waiting "
                           "(0 = never; default 5)")

    check = commands.add_parser("check-config", help="validate a config file and the FLOWGAUGE_* environment")
    check.add_argument("-c", "--config", help="YAML config file (default: $FLOWGAUGE_CONFIG or the built-in one)")
    check.add_argument("--print", action="store_true", dest="print_config", help="print it, secrets redacted")

    bench = commands.add_parser("bench", help="measure the pipeline against cryptofeed on the same frames")
    from flowgauge.bench import add_arguments

    add_arguments(bench)

    # A command of its own rather than `bench --bus`: other inputs (brokers, not cryptofeed), other options
    # (--rounds, no --profile) and another JSON schema; only --json and --quick would be shared.
    bench_bus = commands.add_parser("bench-bus", help="measure publish rate and latency to an SDK subscriber "
                                                      "per bus backend (starts its own nats-server, redis-server)")
    from flowgauge.bench import add_bus_arguments

    add_bus_arguments(bench_bus)

    soak = commands.add_parser("soak", help="run the daemon for a long time at a high synthetic rate under faults "
                                            "and check every payload against the simulators' ground truth")
    from flowgauge.soak import add_arguments as add_soak_arguments

    add_soak_arguments(soak)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    handler = {
        "run": _run,
        "record": _run,
        "replay": _replay,
        "export": _export,
        "simulate": _simulate,
        "tail": _tail,
        "check-config": _check_config,
        "bench": _bench,
        "bench-bus": _bench_bus,
        "soak": _soak,
    }[args.command]
    if args.command in _BATCH_COMMANDS:
        # Their Ctrl-C contract (summary, exit 130) holds even when started from a script's background job,
        # which starts with SIGINT ignored and would otherwise make them uninterruptible.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status = _select_core(os.environ.get("FLOWGAUGE_CORE")) if args.command in _PIPELINE_COMMANDS else 0
        if not status:
            status = handler(args)
    except ModuleNotFoundError as exc:
        status = _missing_dependency(args.command, exc)
    sys.exit(status)


def _missing_dependency(command: str, exc: ModuleNotFoundError) -> int:
    """A dependency the command needs is not installed: one line (which, and how to get it), exit 1.

    That is a client-only install (the package without its dependencies, plus what subscribing needs)
    asked for more than `tail`. One of flowgauge's own modules missing is a broken install: re-raised.
    """
    missing = (exc.name or "").partition(".")[0]
    if not missing or missing == "flowgauge":
        raise exc
    print(f"flowgauge {command}: module {missing!r} is not installed (a client-only install has just what "
          f"subscribing needs); `pip install flowgauge` installs the full package with the daemon's dependencies",
          file=sys.stderr)
    return 1


# Commands that stop on their own and report what they did when interrupted.
_BATCH_COMMANDS = frozenset({"replay", "bench", "bench-bus", "soak"})

# Commands that run books and metrics, i.e. the hot core that FLOWGAUGE_CORE chooses.
_PIPELINE_COMMANDS = frozenset({"run", "record", "replay", "export", "bench"})


def _select_core(requested: str | None) -> int:
    """FLOWGAUGE_CORE=python|compiled forces a core; unset = compiled when built. 2 if it cannot run."""
    from flowgauge import core

    try:
        chosen = core.select(requested)
    except core.CoreUnavailable as exc:
        print(f"flowgauge: {exc}", file=sys.stderr)
        return 2
    if chosen == core.PYTHON and not requested:
        print(f"flowgauge: warning: running the pure-Python core: {core.fallback_reason()}", file=sys.stderr)
    return 0


def _version() -> str:
    from flowgauge import __version__

    return __version__


def _number(text: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None


def _non_negative_int(text: str) -> int:
    value: int = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value: int = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _port(text: str) -> int:
    value: int = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0..65535, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value: float = _number(text, float)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _finite_float(text: str) -> float:
    value: float = _number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _until_signalled(work: Coroutine[Any, Any, None]) -> None:
    """Run a long-running command's coroutine until it returns or SIGINT/SIGTERM arrives.

    A signal cancels the work (its `async with` blocks close what they opened) and this returns normally:
    a stop on request is a success (exit 0), for a terminal's Ctrl-C and a supervisor's SIGTERM alike.
    """

    async def guarded() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(work)
        signalled: list[int] = []

        def stop(signum: int) -> None:
            signalled.append(signum)
            task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop, signum)
        try:
            await task
        except asyncio.CancelledError:
            if not signalled:
                raise
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    # A Ctrl-C before the loop's handlers are installed arrives as KeyboardInterrupt: still a requested stop.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(guarded())


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not on this platform: the default loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _run(args: argparse.Namespace) -> int:
    from flowgauge import app, logs
    from flowgauge.config import ConfigError, load_settings

    try:
        settings = load_settings(args.config, os.environ)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    _install_uvloop()
    return asyncio.run(app.run(settings, record_dir=args.record))


def _replay(args: argparse.Namespace) -> int:
    from flowgauge.replay.command import run

    return run(args)


def _export(args: argparse.Namespace) -> int:
    from flowgauge.replay.export import run

    return run(args)


def _simulate(args: argparse.Namespace) -> int:
    import importlib

    from flowgauge import logs

    logs.configure(os.environ.get("FLOWGAUGE_LOG_LEVEL", "INFO"))
    venues = list(SIMULATORS) if args.venue == "all" else [args.venue]
    if len(venues) > 1 and (args.port is not None or args.recording is not None):
        print("simulate: --port and --recording apply to a single --venue", file=sys.stderr)
        return 2
    if args.base_port is not None and args.base_port + len(venues) - 1 > 65535:
        print(f"simulate: --base-port {args.base_port} leaves no room for {len(venues)} ports", file=sys.stderr)
        return 2
    plans: list[tuple[str, int, Path]] = []  # (venue, port, recording)
    for offset, venue in enumerate(venues):
        _, default_port, default_recording = SIMULATORS[venue]
        if args.base_port is not None:
            default_port = args.base_port + (offset if len(venues) > 1 else 0)
        recording = Path(args.recording) if args.recording else DATA_DIR / default_recording
        if not recording.exists():
            print(f"simulate: recording not found for {venue}: {recording}", file=sys.stderr)
            return 2
        if args.recording:
            wrong = _recording_problem(venue, recording)
            if wrong:
                print(f"simulate: {wrong}", file=sys.stderr)
                return 2
        plans.append((venue, default_port if args.port is None else args.port, recording))
    modules = [importlib.import_module(SIMULATORS[venue].module) for venue, _, _ in plans]
    faults = _fault_plan(args, [venue for venue, _, _ in plans])
    if faults is None:
        return 2
    lifecycle = _lifecycle_options(args, [venue for venue, _, _ in plans])
    if lifecycle is None:
        return 2
    _install_uvloop()
    # Bound, not listening: nothing connects before the event loop (and its signal handlers) runs.
    sockets = _bind_all(args.host, [(venue, port) for venue, port, _ in plans])
    if sockets is None:
        return 2
    runs: list[Coroutine[Any, Any, None]] = []
    for (venue, port, recording), module, sock in zip(plans, modules, sockets, strict=True):
        runs.append(
            _naming_venue(
                venue,
                module.run_simulator(
                    str(recording),
                    host=args.host,
                    port=port,
                    speed=args.speed,
                    loop=not args.no_loop,
                    garbage_every=args.garbage_every,
                    gap_every=args.gap_every,
                    clock_skew_s=args.clock_skew,
                    faults=faults[venue],
                    truth_capacity=args.truth_capacity,
                    sock=sock,
                    **lifecycle.get(venue, {}),
                ),
            )
        )

    async def serve_all() -> None:
        async with asyncio.TaskGroup() as tasks:
            for run in runs:
                tasks.create_task(run)

    failed = False
    try:
        _until_signalled(serve_all())
    except* _SimulatorFailed as group:
        for exc in group.exceptions:
            print(f"simulate: {exc}", file=sys.stderr)
        failed = True
    finally:
        for sock in sockets:  # a simulator closes its own; these are the ones never started
            sock.close()
    return 2 if failed else 0


def _fault_plan(args: argparse.Namespace, venues: Sequence[str]) -> dict[str, list[Any]] | None:
    """The faults each venue's simulator injects (--fault and --scenario); None (one line on stderr) when a
    spec is wrong, names no served venue, or asks a simulator for a fault it does not inject."""
    from flowgauge.simulate.base import simulator_class
    from flowgauge.simulate.faults import FaultError, check_supported, load_scenario, parse_fault, specs_for_venue

    try:
        specs = [parse_fault(text) for text in args.fault]
        if args.scenario is not None:
            specs += load_scenario(args.scenario)
        for spec in specs:
            if spec.venue is not None and spec.venue not in venues:
                raise FaultError(f"{spec.describe()}: venue={spec.venue} is not served (serving {', '.join(venues)})")
        plan = {venue: specs_for_venue(specs, venue) for venue in venues}
        for venue in venues:
            check_supported(plan[venue], simulator_class(SIMULATORS[venue].module).SUPPORTED_FAULTS, venue)
    except FaultError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return None
    return plan


# Simulators that play instrument lifecycle (--delist, --expire).
_LIFECYCLE_VENUES = ("binanceusdm", "bybit", "deribit")


def _lifecycle_options(args: argparse.Namespace, venues: Sequence[str]) -> dict[str, dict[str, Any]] | None:
    """`{venue: {"lifecycle": Lifecycle}}` for --delist / --expire ({} without them); None (one line on stderr)
    when a spec is wrong or no served venue plays lifecycle."""
    from flowgauge.simulate.lifecycle import Lifecycle, LifecycleError, parse_retirement

    if not args.delist and not args.expire:
        return {}
    try:
        retirements = [parse_retirement(text, False) for text in args.delist]
        retirements += [parse_retirement(text, True) for text in args.expire]
    except LifecycleError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return None
    playing = [venue for venue in venues if venue in _LIFECYCLE_VENUES]
    if not playing:
        print(f"simulate: --delist and --expire are played by {', '.join(_LIFECYCLE_VENUES)} only", file=sys.stderr)
        return None
    return {venue: {"lifecycle": Lifecycle(retirements)} for venue in playing}


def _bind_all(host: str, ports: Sequence[tuple[str, int]]) -> list[socket.socket] | None:
    """Bind every venue's port before any simulator starts; None (each failure named on stderr) if any fails.

    All or nothing: a user with several busy ports learns of every one at once, the same way on every run.
    """
    from flowgauge.simulate.base import bind_port

    bound: list[socket.socket] = []
    failures: list[str] = []
    for venue, port in ports:
        try:
            bound.append(bind_port(host, port))
        except OSError as exc:  # bind_port() names host:port and the cause
            failures.append(_os_error_line(venue, exc))
    if not failures:
        return bound
    for sock in bound:
        sock.close()
    for line in failures:
        print(f"simulate: {line}", file=sys.stderr)
    return None


def _recording_problem(venue: str, recording: Path) -> str | None:
    """Why `recording` cannot be served as `venue` (another venue's, unreadable), or None.

    A recording without a header is served as before: the simulator finds in it what it can.
    """
    from flowgauge.recording import EXCHANGE_VENUES, RecordingError, read_header

    try:
        header = read_header(recording)
    except OSError as exc:
        return _os_error_line(venue, exc)
    except RecordingError as exc:
        return f"{venue}: cannot serve the recording: {exc}"
    if header is None or EXCHANGE_VENUES.get(header.exchange) == venue:
        return None
    recorded = EXCHANGE_VENUES.get(header.exchange, "an unknown venue")
    return f"--recording {recording} is a recording of {header.exchange} ({recorded}), not of {venue}"


def _os_error_line(venue: str, exc: OSError) -> str:
    detail = exc.strerror or str(exc)
    return f"{venue}: {detail}" + (f": {exc.filename}" if exc.filename else "")


class _SimulatorFailed(Exception):
    """A simulator could not start; the message is the one line for stderr, naming the venue."""


async def _naming_venue(venue: str, run: Coroutine[Any, Any, None]) -> None:
    """Await a simulator; a socket it cannot bind or a recording it cannot read fails it naming the venue."""
    from flowgauge.recording import RecordingError

    try:
        await run
    except OSError as exc:  # reading the recording: missing, a directory, no permission
        raise _SimulatorFailed(_os_error_line(venue, exc)) from exc
    except RecordingError as exc:
        raise _SimulatorFailed(f"{venue}: cannot serve the recording: {exc}") from exc


def _tail(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from flowgauge.client import BusUnreachable, ConnectionLost, SubscriberError, check_url
    from flowgauge.sdk import Subscription
    from flowgauge.tail import tail_json, tail_table

    try:
        # Before the event loop starts: a typo in the URL or the pattern costs nothing.
        try:
            Subscription(args.url, [args.pattern])
        except SubscriberError:
            raise  # InvalidBusURL is a ValueError too: reported below as what it is
        except ValueError as exc:
            print(f"tail: invalid pattern: {exc}", file=sys.stderr)
            return 2
        if urlsplit(args.url).scheme in ("ws", "wss"):
            check_url(args.url)
        table = not args.json_lines and sys.stdout.isatty()
        run = tail_table if table else tail_json
        _until_signalled(run(args.url, args.pattern, token=args.token, count=args.count,
                             quiet_after_s=args.quiet_after))
    except SubscriberError as exc:
        print(f"tail: {exc}", file=sys.stderr)
        # Unreachable or lost: the daemon or broker is down (runtime); otherwise the URL, token or pattern is wrong.
        return 1 if isinstance(exc, BusUnreachable | ConnectionLost) else 2
    except BrokenPipeError:
        # The reader went away (`flowgauge tail | head`): that ends tail as it ends any filter. Point stdout at
        # /dev/null so the interpreter's final flush does not fail on the same closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from flowgauge.config import check_config_main

    return check_config_main(args.config, args.print_config, os.environ)


def _bench(args: argparse.Namespace) -> int:
    import time

    started = time.monotonic()
    try:
        from flowgauge.bench.report import execute  # inside: Ctrl-C while its heavy imports run is covered

        return execute(args)
    except KeyboardInterrupt:
        # A batch command stopped by the user: say what it did, exit 128 + SIGINT.
        print(f"bench: interrupted after {time.monotonic() - started:.1f} s; no results "
              f"(the summary is printed only when every measurement completes)", file=sys.stderr)
        return 130


def _bench_bus(args: argparse.Namespace) -> int:
    import time

    started = time.monotonic()
    try:
        from flowgauge.bench.brokers import DEFAULT_SBIN
        from flowgauge.bench.bus import execute

        # Debian installs nats-server in /usr/sbin, outside a user's PATH; the variable lets a test hide it.
        return execute(args, sbin=os.environ.get("FLOWGAUGE_BENCH_SBIN", DEFAULT_SBIN))
    except KeyboardInterrupt:
        print(f"bench-bus: interrupted after {time.monotonic() - started:.1f} s; no results "
              f"(the summary is printed only when every measurement completes)", file=sys.stderr)
        return 130


def _soak(args: argparse.Namespace) -> int:
    import time

    started = time.monotonic()
    try:
        from flowgauge.soak import execute

        return execute(args, os.environ)
    except KeyboardInterrupt:
        # Its children (simulators, daemon) share the terminal's process group: Ctrl-C reaches them too.
        print(f"soak: interrupted after {time.monotonic() - started:.1f} s; no figures", file=sys.stderr)
        return 130
