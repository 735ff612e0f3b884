"""Loads the fuzz suite's hypothesis profile (tests/fuzz/profiles.py) before its tests are collected."""

from tests.fuzz import profiles  # noqa: F401  # registers and loads the profile on import
