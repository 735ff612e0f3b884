"""`flowgauge replay`: arguments, output file, progress, summary and exit code around `replay.replay`.

Exit codes: 0 every file replayed; 1 some file could not be (each named on stderr as it is met, and
again at the end; the others are replayed all the same); 2 bad arguments or configuration (an `--out`
that cannot be created); 130 interrupted by SIGINT and 143 stopped by SIGTERM, each after a one-line
summary of what was done (and with every payload published so far written whole to `--out`).
Imports only argparse at module level: the CLI builds its parser from here on every command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from flowgauge.config import AggregateSettings, BarSettings
    from flowgauge.metrics.params import MetricParams

EXIT_FAILED_FILES = 1
EXIT_BAD_ARGUMENTS = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM: a supervisor's (or `kill`'s) stop, handled the same way
_ENV_TRADES = "FLOWGAUGE_PUBLISH__TRADES"  # publish.trades, honoured without -c too


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="recordings (.jsonl.zst or .jsonl), in order")
    parser.add_argument(
        "--speed", type=_speed, default=0.0, help="0 = as fast as possible (default), 1 = recorded pace, N = N x"
    )
    parser.add_argument("--out", help="write every published message as one JSON line to this file")
    parser.add_argument("-c", "--config", help="only the venues and symbols this config lists")
    parser.add_argument("--interleave", action="store_true",
                        help="replay the files of different venues interleaved by receive time (each venue's files "
                             "in the order given), as the daemon received them, instead of one file after another: "
                             "for a session recorded on several venues (cross-venue aggregates)")  # fmt: skip


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = as fast as possible), got {text}")
    return value


class _Terminated(BaseException):
    """SIGTERM arrived: raised wherever the replay is, as Python raises KeyboardInterrupt for SIGINT, so
    both stop it the same way (output flushed, summary printed). A BaseException for the same reason."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


class _HeldStops:
    """SIGINT and SIGTERM stop the replay where it is (KeyboardInterrupt, _Terminated), except while a payload is
    written to --out and counted (`held`): a stop arriving then is raised right after, so the summary's count is
    exactly the lines in --out (a stop between the count and the write made them differ by one). A second stop
    while one is held is raised at once."""

    def __init__(self) -> None:
        self._holding = False
        self._pending: BaseException | None = None

    def on_sigint(self, signum: int, frame: object) -> None:
        self._stop(KeyboardInterrupt())

    def on_sigterm(self, signum: int, frame: object) -> None:
        self._stop(_Terminated())

    def _stop(self, exc: BaseException) -> None:
        # A second stop while one is held raises at once: a write blocked on a reader that never reads (a stalled
        # pipe) must not make Ctrl-C wait for it.
        if not self._holding or self._pending is not None:
            raise exc
        self._pending = exc

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        except BaseException:
            self._pending = None  # the payload failed or a second stop came: that is what stops the replay now
            raise
        finally:
            self._holding = False
        if self._pending is not None:
            exc, self._pending = self._pending, None
            raise exc


def run(args: argparse.Namespace) -> int:
    # Without a handler SIGTERM kills the process on the spot: no summary, and --out loses its buffered tail.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run(args)
    except KeyboardInterrupt:  # before the replay started (loading the config): nothing done yet
        print("replay interrupted before it started", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print("replay terminated before it started", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    from flowgauge import logs

    logs.configure(os.environ.get("FLOWGAUGE_LOG_LEVEL", "WARNING"))
    from flowgauge.config import AggregateSettings, BarSettings

    symbols: dict[str, Sequence[str]] | None = None
    publish_trades = False
    aggregate_settings = AggregateSettings()  # publish.aggregates: the config's with -c, else the defaults (on)
    clock_bounds: dict[str, float] | None = None  # the config's venues.<id>.clock_skew_max_s (default: 2 s)
    families: tuple[str, ...] | None = None  # publish.families and metrics.*: the config's with -c, else defaults
    metric_params: MetricParams | None = None
    bar_settings = BarSettings()  # publish.bars: the config's with -c, else the defaults (on, 1 s), as the daemon
    if args.config or os.environ.get(_ENV_TRADES):
        from flowgauge.config import ConfigError, load_settings

        try:
            if args.config:
                settings = load_settings(args.config, os.environ)
                symbols = {venue: list(v.symbols) for venue, v in settings.venues.items()}
                clock_bounds = {venue: v.clock_skew_max_s for venue, v in settings.venues.items()}
                aggregate_settings = settings.publish.aggregates
                families = settings.publish.families
                bar_settings = settings.publish.bars
                from flowgauge.metrics.params import from_settings

                metric_params = from_settings(settings.metrics)
            else:
                # No config: every instrument of the files, but FLOWGAUGE_PUBLISH__TRADES still says whether trade
                # records are written (checked like the daemon checks it; nothing else of the environment applies).
                settings = load_settings(None, {_ENV_TRADES: os.environ[_ENV_TRADES]})
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_BAD_ARGUMENTS
        publish_trades = settings.publish.trades
    out = None
    if args.out:
        try:
            out = open(args.out, "wb")  # noqa: SIM115 - closed in _replay_into's finally
        except OSError as exc:
            print(f"replay: cannot write --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_BAD_ARGUMENTS
    return _replay_into(list(args.files), out, args.speed, symbols, publish_trades, clock_bounds, aggregate_settings,
                        args.interleave, families, metric_params, bar_settings)  # fmt: skip


class _OutputFailed(Exception):
    """Writing `--out` failed (a full disk): the replay stops, and no recording is blamed for it."""


def _replay_into(
    files: list[str],
    out: BinaryIO | None,
    speed: float,
    symbols: dict[str, Sequence[str]] | None,
    publish_trades: bool = False,
    clock_bounds: dict[str, float] | None = None,
    aggregate_settings: AggregateSettings | None = None,
    interleave: bool = False,
    families: tuple[str, ...] | None = None,
    metric_params: MetricParams | None = None,
    bar_settings: BarSettings | None = None,
) -> int:
    from flowgauge.metrics.aggregate import CrossVenueAggregates
    from flowgauge.metrics.bar_feed import BarSpec
    from flowgauge.metrics.families import DEFAULT_FAMILIES
    from flowgauge.publish import codec
    from flowgauge.replay.progress import TerminalProgress, summary
    from flowgauge.replay.replay import ReplayStats, replay

    paced = speed > 0  # a paced replay is watched as it goes (tail -f): each line is flushed when written

    def sink(topic: str, payload: bytes) -> None:
        if out is None:
            return
        try:
            out.write(codec.frame(topic, payload) + b"\n")  # one write: an interrupt never splits a line
            if paced:
                out.flush()
        except OSError as exc:
            raise _OutputFailed(exc.strerror or str(exc)) from exc

    def on_file_error(path: str, why: str) -> None:
        done = stats.published_from_file
        if done:  # what it published stays published (and in --out): the file was cut short, not skipped
            progress.write(f"replay: {path} stopped after {done} payload{'s' if done != 1 else ''}: {why}")
        else:
            progress.write(f"replay: skipped {path}: {why}")

    aggregates = None
    if aggregate_settings is not None and aggregate_settings.enabled:
        aggregates = CrossVenueAggregates(
            aggregate_settings.interval_ms, aggregate_settings.stale_s, aggregate_settings.min_venues
        )
    bars = None  # closed clock bars on flowgauge.v1.bars.<venue>.<slug>, as the daemon publishes them
    if bar_settings is not None and bar_settings.enabled:
        bars = BarSpec(bar_settings.interval_s, bar_settings.z_half_life_s, bar_settings.z_min_samples)
    stats = ReplayStats()
    started = time.monotonic()
    progress = TerminalProgress(files, sys.stderr)
    stopped: str | None = None
    output_error: str | None = None
    stops = _HeldStops()
    previous_sigint = signal.signal(signal.SIGINT, stops.on_sigint)
    signal.signal(signal.SIGTERM, stops.on_sigterm)
    try:
        replay(files, sink, speed=speed, symbols=symbols, stats=stats, on_file_error=on_file_error,
               on_progress=progress, publish_trades=publish_trades, clock_skew_max_s=clock_bounds,
               atomic=stops.held, aggregates=aggregates, interleave=interleave,
               families=families if families is not None else DEFAULT_FAMILIES, metric_params=metric_params,
               bars=bars)
    except KeyboardInterrupt:
        stopped = "interrupted"
    except _Terminated:
        stopped = "terminated"
    except _OutputFailed as exc:
        stopped, output_error = "stopped", str(exc)
    finally:
        # Done or stopped: a second SIGTERM must not cut the summary short (run() restores the handler).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, previous_sigint)
        progress.close()
    if out is not None:
        try:
            out.close()
        except OSError as exc:  # the last buffered lines could not be written
            output_error = output_error or exc.strerror or str(exc)
    if output_error is not None:
        print(f"replay: cannot write --out {out.name if out else ''}: {output_error}", file=sys.stderr)
    if stopped is None:
        for topic, count in sorted(stats.per_topic.items()):
            print(f"  {topic}: {count}", file=sys.stderr)
    print(summary(stats, time.monotonic() - started, stopped=stopped), file=sys.stderr)
    if stopped == "interrupted":
        return EXIT_INTERRUPTED
    if stopped == "terminated":
        return EXIT_TERMINATED
    if stats.failed:
        names = ", ".join(path for path, _ in stats.failed)
        print(f"replay: {len(stats.failed)} of {stats.files_total} files failed: {names}", file=sys.stderr)
        return EXIT_FAILED_FILES
    return EXIT_FAILED_FILES if output_error is not None else 0
