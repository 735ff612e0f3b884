"""Backlog conflation: when the loop falls behind, publish one payload per book per loop turn (issue 8 item 6).

Load-shedding, not a throughput trick. A frame handled more than `after_ms` after its bytes arrived (the
session's `ts_recv` is the arrival time, see `connectors.arrivals`) means frames are queueing: its events are
handled with the engine's `conflate` switch on, so every delta is applied and its flow accumulated as always,
but each book's payload waits for the end of the loop turn, where the engine publishes the last state of each
book once (flagged CONFLATED when it stood for several). The turn ends when the stream task yields to the
event loop: `schedule` (the loop's `call_soon`) runs the flush then. Replay never conflates (it has no loop
to fall behind; its output must not depend on the machine's speed).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flowgauge.engine import Engine

__all__ = ["BacklogConflation"]


class BacklogConflation:
    """Decides per frame whether the loop is behind, and flushes the engine's deferred payloads once per turn.

    Args:
        engine: the engine every feed of the loop hands its events to.
        after_ms: a frame that waited longer than this (receive -> handling) turns conflation on for itself.
        schedule: runs a callback once the current loop turn is over (`loop.call_soon`).
        clock: ns wall clock, the one `ts_recv` is taken with.
    """

    def __init__(
        self,
        engine: Engine,
        after_ms: float,
        schedule: Callable[[Callable[[], None]], object],
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.engine = engine
        self.after_ns = int(after_ms * 1_000_000)
        self._schedule = schedule
        self._clock = clock
        self._flush_scheduled = False
        self.frames_conflated = 0  # frames handled while behind

    def begin_frame(self, ts_recv: int) -> None:
        """Before a frame's events go to the engine: switch conflation on if the frame waited too long."""
        behind = self._clock() - ts_recv > self.after_ns
        self.engine.conflate = behind
        if behind:
            self.frames_conflated += 1
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._schedule(self._end_of_turn)

    def end_frame(self) -> None:
        """After the frame's events: anything else the loop runs (REST answers, polls) publishes as usual."""
        self.engine.conflate = False

    def _end_of_turn(self) -> None:
        self._flush_scheduled = False
        self.engine.flush_conflated()
