"""Fuzzing every venue parser with mutated real frames, and the engine (both cores) with what they parse.

Per example: a fresh parser and engine are primed with the recording's real frames until its books are VALID,
then fed one to four inputs (mutated frames, real frames, REST snapshot bodies where the venue has them,
mutated or not), then the real frames that followed in the recording. Passing means: no exception leaves a
parser except the venue module's own typed errors, none leaves the engine, and no published book payload is
crossed or carries a NaN or an infinity (checked before encoding, which would turn them into null).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fuzz.mutations import mutated
from tests.fuzz.profiles import examples
from tests.fuzz.venues import VENUES, Harness, VenueCase, venue_case

from flowgauge import core


@contextlib.contextmanager
def selected(core_name: str) -> Iterator[None]:
    """The parsers' level validation follows the selected core too (C loops or the reference)."""
    previous = core.active_core()
    core.select(core_name)
    try:
        yield
    finally:
        core.select(previous)


# A dropped frame breaks the sequence and the frames after it only find an INVALID book: rare, so most examples
# mutate frames that reach a live book.
_ACTIONS = ("keep",) * 4 + ("mutate",) * 3 + ("insert", "snapshot") + ("drop",)
Step = tuple[str, str | bytes, str | None]  # ("frame", data, None) or ("snapshot", body, symbol)


@st.composite
def inputs(draw: st.DrawFn, case: VenueCase) -> list[Step]:
    """The recording's frames after the prime, in order, each kept, mutated (so a mutated book message carries
    the sequence id the book expects next and reaches a live book), dropped, or preceded by a mutated frame of
    another kind; REST snapshot bodies, mutated or not, between them where the venue has them."""
    steps: list[Step] = []
    for op in case.continuation:
        action = draw(st.sampled_from(_ACTIONS))
        if action == "snapshot" and case.snapshot_seeds:
            symbol = draw(st.sampled_from(sorted(case.snapshot_seeds)))
            bodies = case.snapshot_seeds[symbol]
            body = draw(mutated(bodies)) if draw(st.booleans()) else draw(st.sampled_from(bodies))
            steps.append(("snapshot", body, symbol))
        if action == "insert":
            steps.append(("frame", draw(mutated(case.frame_seeds)), None))
        real: Step = ("frame" if op.symbol is None else "snapshot", op.data, op.symbol)
        if action == "mutate":
            steps.append((real[0], draw(mutated([op.data])), op.symbol))
        elif action != "drop":
            steps.append(real)
    return steps


def run_case(case: VenueCase, core_name: str, steps: list[Step]) -> Harness:
    harness = Harness(case, core_name)
    for op in case.prime:
        harness.op(op)
    for kind, data, symbol in steps:
        if kind == "snapshot":
            assert symbol is not None
            harness.snapshot(symbol, data)
        else:
            harness.frame(data)
    # A resync the inputs caused gets the recorded REST snapshot, as the scheduler would deliver it.
    for symbol in harness.snapshot_requests[:4]:
        for body in case.snapshot_seeds.get(symbol, [])[:1]:
            harness.snapshot(symbol, body)
    return harness


@pytest.mark.parametrize("core_name", core.CORES)
@pytest.mark.parametrize("venue", VENUES)
def test_real_frames_publish_valid_books(venue: str, core_name: str) -> None:
    """The harness itself: unmutated, the recording's frames publish VALID, checked book payloads (so the
    fuzz tests below exercise books that are live, and the checks run)."""
    case = venue_case(venue)
    with selected(core_name):
        real: list[Step] = [("frame" if o.symbol is None else "snapshot", o.data, o.symbol) for o in case.continuation]
        harness = run_case(case, core_name, real)
    assert harness.valid_books() > 0
    assert harness.checker.valid_book_payloads > 0
    assert harness.typed_errors_seen == 0


@pytest.mark.parametrize("core_name", core.CORES)
@pytest.mark.parametrize("venue", VENUES)
@settings(max_examples=examples())
@given(data=st.data())
def test_mutated_frames(venue: str, core_name: str, data: st.DataObject) -> None:
    case = venue_case(venue)
    steps = data.draw(inputs(case), label="inputs")
    with selected(core_name):
        run_case(case, core_name, steps)
