"""The engine's own tests (tests/unit/test_engine.py: payload contents, hand-built interleaved streams for the
windows anchored on each payload's time, encode failures) run again here under each core explicitly, so both
cores are held to them whichever one is the default."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.unit.test_engine import *  # noqa: F403 - re-collect every engine test in this module

from flowgauge import core


@pytest.fixture(params=core.CORES, autouse=True)
def each_core(request: pytest.FixtureRequest) -> Iterator[str]:
    previous = core.active_core()
    core.select(request.param)
    try:
        yield request.param
    finally:
        core.select(previous)
