"""Loads the fuzz suite's hypothesis profile (tests/fuzz/profiles.py) before its tests are collected."""

import pytest
from tests.fuzz import profiles  # registers and loads the profile on import


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long profile runs ten times the examples: its tests get ten times the suite's per-test timeout
    (pyproject's 120 s), so a long run on a loaded machine ends with its findings, not a timeout."""
    if profiles.profile == "long":
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(1200))
