"""Every conformance test runs under both cores: the pure-Python reference and the compiled core.

The compiled core must be built here (CI builds it with the package); an unavailable core fails the tests
rather than skipping them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flowgauge import core


@pytest.fixture(scope="module", params=core.CORES, autouse=True)
def hot_core(request: pytest.FixtureRequest) -> Iterator[str]:
    previous = core.active_core()
    core.select(request.param)
    try:
        yield request.param
    finally:
        core.select(previous)
