"""A stop (Ctrl-C, SIGTERM) arriving while replay writes a payload to --out and counts it lands after both, so the
summary's count is exactly the lines written (a stop between count and write made them differ by one under load)."""

from __future__ import annotations

import os
import signal

import pytest

from flowgauge.replay.command import _HeldStops, _Terminated


def test_a_stop_during_a_payload_lands_after_it_is_written_and_counted() -> None:
    stops = _HeldStops()
    written: list[str] = []
    counted = 0
    with pytest.raises(KeyboardInterrupt), stops.held():
        written.append("line")
        stops.on_sigint(signal.SIGINT, None)  # held: the payload still completes
        counted += 1
    assert written == ["line"] and counted == 1


def test_outside_a_payload_a_stop_raises_at_once_and_a_second_held_one_too() -> None:
    stops = _HeldStops()
    with pytest.raises(_Terminated):
        stops.on_sigterm(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt), stops.held():
        stops.on_sigterm(signal.SIGTERM, None)  # held
        stops.on_sigint(signal.SIGINT, None)  # a second stop: a blocked write must not make it wait
    with stops.held():  # nothing pending any more
        pass


def test_a_real_signal_is_held_through_the_payload() -> None:
    stops = _HeldStops()
    previous = signal.signal(signal.SIGINT, stops.on_sigint)
    try:
        done = False
        with pytest.raises(KeyboardInterrupt), stops.held():
            os.kill(os.getpid(), signal.SIGINT)  # delivered to the main thread at the next bytecode
            done = True
        assert done
    finally:
        signal.signal(signal.SIGINT, previous)
