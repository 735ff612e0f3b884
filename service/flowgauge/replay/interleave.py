"""Replay of several venues' recordings interleaved by receive time (`replay(..., interleave=True)`).

A recorder writes one file per venue (and rotates each), so a session of several venues is several files whose
times overlap. Replayed one after another, every venue's frames would reach the engine after the previous venue's
last one, and what spans venues (the cross-venue aggregates, the order of rows in an export) would not be what the
daemon saw. Interleaved, the files are grouped into one chain per venue (a venue's rotated files continue each
other, in the order given) and the chains' records are merged by their receive time `ts`, ties going to the
chain whose first file was given first: the engine gets the frames in the order the daemon received them, to the
recording's float-seconds precision. Each venue's own records keep their order, so every book's payloads are the
ones a sequential replay publishes.

A file that cannot be replayed (unreadable, corrupt, unknown exchange, no metadata) is reported the way a
sequential replay reports it, and its chain goes on with the venue's next file.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from flowgauge.engine import Engine
from flowgauge.recording import Connect, Header, Http, ReadStats, RecordingError, Recv, iter_records, read_header
from flowgauge.replay.replay import (
    EXCHANGE_IDS,
    ReplayError,
    ReplayStats,
    _Connections,
    _FileReplay,
)

__all__ = ["replay_interleaved"]

_PROGRESS_EVERY = 4096  # records between progress callbacks, as in a sequential replay

# (ts, chain index, file state, record): what the merge orders
_Item = tuple[float, int, "_File", Http | Connect | Recv]


class _File:
    """One file of a chain: its replay state, its reader counts and what it has published."""

    __slots__ = ("failed", "path", "published", "read", "state")

    def __init__(self, path: Path, state: _FileReplay) -> None:
        self.path = path
        self.state = state
        self.read = ReadStats()
        self.published = 0
        self.failed = False


def replay_interleaved(
    paths: Sequence[str | Path],
    engine: Engine,
    symbols: dict[str, Sequence[str]] | None,
    stats: ReplayStats,
    speed: float,
    fail: Callable[[str, BaseException], None],
    on_progress: Callable[[ReplayStats], None] | None,
) -> None:
    """Replay `paths` into `engine`, interleaved by receive time (see the module docstring).

    Args:
        fail: `fail(path, exc)` for a file that cannot be replayed (records it, and raises when the caller has no
            `on_file_error`).
    """
    connections = _Connections()
    chains: dict[str, list[Path]] = {}
    for path in map(Path, paths):
        try:
            header = read_header(path)
            venue = EXCHANGE_IDS.get(header.exchange) if header is not None else None
            if header is None:
                raise ReplayError(f"{path}: no header line naming the exchange (empty, or not a recording)")
            if venue is None:
                raise ReplayError(f"{path}: unknown exchange {header.exchange!r} (known: {', '.join(EXCHANGE_IDS)})")
        except (ReplayError, RecordingError, OSError) as exc:
            fail(str(path), exc)
            stats.files_done += 1
            continue
        chains.setdefault(venue, []).append(path)

    def chain(index: int, files: list[Path]) -> Iterator[_Item]:
        for path in files:
            current = _File(path, _FileReplay(path, engine, symbols, connections))
            try:
                for record in iter_records(path, current.read):
                    if current.failed:
                        break
                    if isinstance(record, Header):
                        venue = EXCHANGE_IDS.get(record.exchange)
                        if venue is None:
                            raise ReplayError(f"{path}: unknown exchange {record.exchange!r}")
                        current.state.set_venue(venue)
                    elif isinstance(record, Http | Connect | Recv):
                        yield record.ts, index, current, record
            except (ReplayError, RecordingError, OSError) as exc:
                _fail_file(current, exc)
            stats.files_done += 1

    def _fail_file(current: _File, exc: BaseException) -> None:
        current.failed = True
        stats.published_from_file = current.published  # what the failing file had published, for its report
        fail(str(current.path), exc)

    first_ts: float | None = None
    wall_start = time.monotonic()
    handled = 0
    merged = heapq.merge(*(chain(i, files) for i, files in enumerate(chains.values())), key=lambda x: x[:2])
    for ts, _, current, record in merged:
        if current.failed:
            continue
        handled += 1
        stats.current_file = str(current.path)
        stats.read = current.read
        if on_progress is not None and handled % _PROGRESS_EVERY == 0:
            on_progress(stats)
        if speed > 0:
            first_ts = ts if first_ts is None else first_ts
            due = (ts - first_ts) / speed - (time.monotonic() - wall_start)
            if due > 0:
                time.sleep(due)
        stats.published_from_file = current.published
        try:
            if isinstance(record, Recv):
                stats.frames += 1
                stats.recorded_ts = ts
                current.state.on_recv(record, stats)
            elif isinstance(record, Http):
                current.state.on_http(record, stats)
            else:
                current.state.on_connect(record, stats)
        except (ReplayError, RecordingError, OSError) as exc:
            _fail_file(current, exc)
        current.published = stats.published_from_file
