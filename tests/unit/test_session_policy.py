"""Pure policy of the websocket Session runner (flowgauge.connectors.session): backoff and classification.

No sockets here: `backoff_delays` is driven by a seeded `random.Random` and `classify` is checked from a
table of the exceptions a session can see. The runner itself is exercised against real servers in
tests/integration/test_session.py.
"""

from __future__ import annotations

import itertools
import random

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidMessage,
    InvalidStatus,
)
from websockets.frames import Close, CloseCode
from websockets.http11 import Response

from flowgauge.connectors.session import backoff_delays, classify


def _nominal(initial: float, cap: float, n: int) -> list[float]:
    """The un-jittered delays: initial, doubling, capped."""
    return [min(cap, initial * 2.0**k) for k in range(n)]


def _closed(code: int, *, ok: bool = False) -> ConnectionClosedOK | ConnectionClosedError:
    """A ConnectionClosed as the client sees it after the server closed with `code`."""
    frame = Close(code, "")
    if ok:
        return ConnectionClosedOK(frame, frame, rcvd_then_sent=True)
    return ConnectionClosedError(frame, frame, rcvd_then_sent=True)


def _rejected(status: int) -> InvalidStatus:
    return InvalidStatus(Response(status, "rejected", Headers(), b""))


# --- backoff_delays ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 42, 2026])
def test_each_delay_is_jittered_within_half_to_full_nominal_delay(seed: int) -> None:
    delays = list(itertools.islice(backoff_delays(0.5, 30.0, random.Random(seed)), 12))

    for delay, nominal in zip(delays, _nominal(0.5, 30.0, 12), strict=True):
        assert nominal / 2.0 <= delay <= nominal, (delay, nominal)


def test_nominal_delay_doubles_until_the_cap_then_stays_there() -> None:
    # A Random whose uniform() always returns the upper bound exposes the nominal delay itself.
    class UpperBound(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    delays = list(itertools.islice(backoff_delays(0.5, 4.0, UpperBound(0)), 8))

    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]


def test_capped_delays_never_exceed_backoff_max() -> None:
    delays = list(itertools.islice(backoff_delays(1.0, 3.0, random.Random(7)), 50))

    assert max(delays) <= 3.0
    # Past the cap the jitter window is [max/2, max]: a floor, so a flapping venue is never hammered.
    assert min(delays[2:]) >= 1.5


def test_same_seed_gives_same_sequence_and_jitter_actually_varies() -> None:
    first = list(itertools.islice(backoff_delays(0.5, 30.0, random.Random(3)), 10))
    again = list(itertools.islice(backoff_delays(0.5, 30.0, random.Random(3)), 10))
    other = list(itertools.islice(backoff_delays(0.5, 30.0, random.Random(4)), 10))

    assert first == again
    assert first != other
    # Jitter spreads reconnects of many daemons: past the cap the delays are not all equal.
    capped = list(itertools.islice(backoff_delays(0.5, 1.0, random.Random(3)), 20))[1:]
    assert len(set(capped)) > 1


def test_first_delay_is_within_initial_window() -> None:
    # Every fresh generator (start, or reset after a healthy connection) begins at initial_s.
    for seed in range(20):
        first = next(backoff_delays(0.2, 30.0, random.Random(seed)))
        assert 0.1 <= first <= 0.2


# --- classify ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TimeoutError(), "timeout"),  # the stale-feed watchdog and the open timeout
        (_closed(CloseCode.NORMAL_CLOSURE, ok=True), "closed"),
        (_closed(CloseCode.GOING_AWAY, ok=True), "closed"),
        (_closed(CloseCode.INTERNAL_ERROR), "closed"),
        (_closed(CloseCode.POLICY_VIOLATION), "closed"),
        (ConnectionClosedError(None, None), "closed"),  # TCP dropped without a close frame (1006)
        (_closed(CloseCode.SERVICE_RESTART), "server_restart"),
        (_rejected(429), "rejected"),
        (_rejected(503), "rejected"),
        (InvalidMessage("did not receive a valid HTTP response"), "error"),
        (ConnectionRefusedError(), "error"),
        (OSError("network unreachable"), "error"),
    ],
    ids=lambda value: value if isinstance(value, str) else type(value).__name__,
)
def test_classify(exc: BaseException, reason: str) -> None:
    assert classify(exc) == reason
