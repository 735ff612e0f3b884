"""A stream of full snapshots (Hyperliquid `l2Book`, rule `snapshots_only`) never publishes a book older than one it
already published (issue 10 item 1: a reordered push carries an older `time`).

Found by the Hyperliquid fault test: a push sent after the next one was loaded over the newer book and published
with the older `book_seq` (the book went back in time, the OFI between the two states was published as order flow).
Now such a push is dropped and counted; a run of `MAX_OLDER_SNAPSHOTS` older pushes (the venue's clock went back) is
followed. Other venues keep their rule: a snapshot mid-stream is a reset, whatever its id (Bybit's u=1 restart).
Both cores (the state machine's snapshot path is shared; the engine's payloads are compared).
"""

from __future__ import annotations

import msgspec
import orjson
import pytest
from tests.conftest import linear_instrument

from flowgauge import core
from flowgauge.book.sequencing import consecutive_ids, snapshots_only
from flowgauge.book.sync import MAX_OLDER_SNAPSHOTS
from flowgauge.engine import Engine
from flowgauge.types import BookSnapshot, BookState, Instrument, InvalidReason

SYM = "BTC/USDC:USDC"
MS = 1_000_000
CORES = [c for c in core.CORES if c == core.PYTHON or core.fallback_reason() is None]


def perp() -> Instrument:
    return msgspec.structs.replace(linear_instrument(SYM, "BTC"), venue="hyperliquid")


def push(time_ms: int, bid_size: float = 5.0) -> BookSnapshot:
    """One `l2Book` push as the Hyperliquid parser makes it: `seq` is the push's time in ms."""
    return BookSnapshot("hyperliquid", SYM, ((100.0, bid_size),), ((100.5, 3.0),), time_ms, time_ms * MS, time_ms * MS)


@pytest.mark.parametrize("core_name", CORES)
def test_an_older_push_is_dropped_and_a_run_of_them_followed(core_name: str) -> None:
    sync = core.new_sync(core_name, snapshots_only)
    assert sync.on_snapshot(push(1000)).applied and sync.on_snapshot(push(2000)).applied
    # Sent out of order: dropped, counted, the book untouched and VALID.
    result = sync.on_snapshot(push(1500, 9.0))
    assert not result.applied and not result.needs_resync and not result.changed
    assert (sync.state, sync.book.seq, sync.stale_snapshots) == (BookState.VALID, 2000, 1)
    # The same time again (a duplicate push) and a newer one are taken.
    assert sync.on_snapshot(push(2000)).applied and sync.on_snapshot(push(3000)).applied
    # The venue's clock goes back 1 s: the first older pushes are dropped, the run's last one is followed.
    for n in range(1, MAX_OLDER_SNAPSHOTS):
        assert not sync.on_snapshot(push(2000 + n)).applied
    assert sync.on_snapshot(push(2000 + MAX_OLDER_SNAPSHOTS)).applied
    assert sync.book.seq == 2000 + MAX_OLDER_SNAPSHOTS
    assert sync.on_snapshot(push(2100)).applied  # and the stream goes on from there
    assert sync.stale_snapshots == 1 + MAX_OLDER_SNAPSHOTS - 1


@pytest.mark.parametrize("core_name", CORES)
def test_after_an_invalid_book_any_push_is_taken(core_name: str) -> None:
    sync = core.new_sync(core_name, snapshots_only)
    sync.on_snapshot(push(5000))
    sync.invalidate(InvalidReason.RESET, "disconnected")
    assert sync.on_snapshot(push(4000)).applied and sync.book.seq == 4000


@pytest.mark.parametrize("core_name", CORES)
def test_other_venues_still_reset_on_any_snapshot(core_name: str) -> None:
    sync = core.new_sync(core_name, consecutive_ids)  # Bybit: a snapshot mid-stream (u=1 restart) is a reset
    sync.on_snapshot(push(5000))
    result = sync.on_snapshot(push(1))
    assert result.applied and result.reset and sync.book.seq == 1


@pytest.mark.parametrize("core_name", CORES)
def test_the_engine_never_publishes_a_book_older_than_the_last(core_name: str) -> None:
    published: list[dict[str, object]] = []
    engine = Engine(
        lambda topic, payload: published.append(orjson.loads(payload)), clock=lambda: 42, core_name=core_name
    )
    engine.add_instrument(perp(), snapshots_only)
    for time_ms, size in ((1000, 5.0), (2000, 6.0), (1500, 9.0), (3000, 7.0)):
        engine.handle(push(time_ms, size))
    books = [p for p in published if p.get("trigger") == "book"]
    assert [p["book_seq"] for p in books] == [1000, 2000, 3000]
    assert [p["bid_sz"] for p in books] == [5.0, 6.0, 7.0]
    # The flow of the last payload runs from the 2000 state to the 3000 one (the dropped push is not in it).
    assert books[-1]["ofi"] == pytest.approx(7.0 - 6.0)
    state = engine.state("hyperliquid", SYM)
    assert state is not None and state.sync.stale_snapshots == 1


def test_both_cores_publish_the_same_bytes() -> None:
    if len(CORES) < 2:
        pytest.skip(f"the compiled core is unavailable: {core.fallback_reason()}")
    outs = []
    for core_name in CORES:
        out: list[bytes] = []
        engine = Engine(lambda topic, payload, out=out: out.append(payload), clock=lambda: 42, core_name=core_name)
        engine.add_instrument(perp(), snapshots_only)
        for time_ms in (1000, 2000, 1500, 3000, 2001, 2002, 2003, 2500):
            engine.handle(push(time_ms, time_ms / 1000))
        outs.append(out)
    assert outs[0] == outs[1]
