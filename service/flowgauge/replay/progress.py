"""Progress of a long replay on a terminal, and the one-line summary every replay ends with.

The bar (tqdm) appears only when stderr is a terminal and the replay has run for `SHOW_AFTER_S`: a short
replay, or one whose stderr goes to a file or a pipe, prints nothing but its summary.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from flowgauge.replay.replay import ReplayStats

SHOW_AFTER_S = 3.0  # replays shorter than this never show a bar


class TerminalProgress:
    """A tqdm bar over the bytes of every file to replay, with frames and payloads so far.

    Call it with the replay's stats (it is the replay's `on_progress`); `close()` removes the bar.
    """

    def __init__(self, paths: list[str], stream: TextIO, *, show_after_s: float = SHOW_AFTER_S) -> None:
        sizes = [_size(path) for path in paths]
        # Bytes before file i: where file i starts in the overall position.
        self._starts = list(itertools.accumulate(sizes, initial=0))
        # No tqdm monitor thread: only this thread draws, so nothing can redraw the bar between close() clearing
        # it and the summary line (a loaded CI run once showed the summary after a redrawn bar).
        tqdm.monitor_interval = 0
        self._bar = tqdm(
            total=self._starts[-1],
            unit="B",
            unit_scale=True,
            file=stream,
            delay=show_after_s,
            disable=not _is_terminal(stream),
            dynamic_ncols=True,
            leave=False,
        )
        self._file = ""
        self._stream = stream

    def __call__(self, stats: ReplayStats) -> None:
        bar = self._bar
        if bar.disable:
            return
        if stats.current_file != self._file:
            self._file = stats.current_file
            bar.set_description_str(
                f"{min(stats.files_done + 1, stats.files_total)}/{stats.files_total} {Path(self._file).name}",
                refresh=False,
            )
        start = self._starts[min(stats.files_done, len(self._starts) - 1)]
        at = f"at {_utc(stats.recorded_ts)} " if stats.recorded_ts else ""
        bar.set_postfix_str(f"{at}frames={stats.frames} payloads={stats.published}", refresh=False)
        bar.update(max(0, start + stats.read.bytes_read - bar.n))

    def write(self, line: str) -> None:
        """Print a line on the bar's stream without breaking the bar (it is redrawn below the line)."""
        self._bar.write(line, file=self._stream)

    def close(self) -> None:
        self._bar.close()


def summary(stats: ReplayStats, elapsed_s: float, *, stopped: str | None = None) -> str:
    """One line: what the replay did, or had done when it was `stopped` ("interrupted") and where."""
    counts = f"frames={stats.frames} ignored={stats.frames_ignored} published={stats.published} in {elapsed_s:.1f} s"
    failed = f" ({len(stats.failed)} failed)" if stats.failed else ""
    if stopped is not None:
        at = min(stats.files_done + 1, stats.files_total)
        return f"replay {stopped} in file {at} of {stats.files_total} ({stats.current_file}){failed}, {counts}"
    files = "1 file" if stats.files_total == 1 else f"{stats.files_total} files"
    return f"replay: {files}{failed}, {counts}"


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stream-like object without a descriptor
        return False


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # reported as a failed file when the replay reaches it
