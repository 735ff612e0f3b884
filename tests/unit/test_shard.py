"""Sharding (`shard.index` / `shard.count`): the split of the configured instruments across processes.

The split must be the same in every process (two shards computing it independently must agree, so it cannot use
Python's per-process salted `hash()`), cover every configured instrument exactly once, and come from config or the
environment with one clear line per mistake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml

from flowgauge.config import (
    ConfigError,
    ShardSettings,
    check_config_main,
    load_settings,
    shard_of,
    shard_venues,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_YAML = REPO / "config" / "default.yaml"

_CHILD = """
import json, sys
from flowgauge.config import load_settings, shard_of
settings = load_settings(None, {})
print(json.dumps([[v, s, [shard_of(v, s, n) for n in range(1, 6)]]
                  for v, body in settings.venues.items() for s in body.symbols]))
"""


def _default_instruments() -> list[tuple[str, str]]:
    settings = load_settings(None, {})
    return [(venue, symbol) for venue, body in settings.venues.items() for symbol in body.symbols]


def _shard(index: int, count: int) -> dict[str, tuple[str, ...]]:
    env = {"FLOWGAUGE_SHARD__INDEX": str(index), "FLOWGAUGE_SHARD__COUNT": str(count)}
    return {venue: body.symbols for venue, body in shard_venues(load_settings(None, env)).items()}


def test_the_split_is_the_same_in_other_processes() -> None:
    """Computed again in fresh interpreters with different hash seeds: identical (Python's hash() would differ)."""
    here = [[v, s, [shard_of(v, s, n) for n in range(1, 6)]] for v, s in _default_instruments()]
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=60, check=True
        ).stdout
        assert json.loads(out) == here, seed


def test_the_split_is_the_documented_crc32() -> None:
    # README documents the formula so that other tools (a deployment script) can compute the split themselves.
    for venue, symbol in _default_instruments():
        for count in range(1, 6):
            assert shard_of(venue, symbol, count) == zlib.crc32(f"{venue}:{symbol}".encode()) % count


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_every_default_instrument_runs_in_exactly_one_shard(count: int) -> None:
    wanted = _default_instruments()
    runs: list[tuple[str, str]] = []
    for index in range(count):
        runs += [(venue, symbol) for venue, symbols in _shard(index, count).items() for symbol in symbols]
    assert sorted(runs) == sorted(wanted)  # each once: no instrument in two shards, none in no shard


def test_count_one_runs_everything_unchanged() -> None:
    settings = load_settings(None, {})
    assert shard_venues(settings) == settings.venues
    assert settings.shard == ShardSettings(index=0, count=1)


def test_a_venue_without_an_instrument_in_the_shard_is_left_out() -> None:
    settings = load_settings(None, {"FLOWGAUGE_SHARD__INDEX": "1", "FLOWGAUGE_SHARD__COUNT": "2"})
    mine = shard_venues(settings)
    expected = {
        venue: tuple(s for s in body.symbols if shard_of(venue, s, 2) == 1) for venue, body in settings.venues.items()
    }
    assert {venue: body.symbols for venue, body in mine.items()} == {v: s for v, s in expected.items() if s}
    assert set(mine) < set(settings.venues)  # this default split leaves at least one venue out entirely
    for venue, body in mine.items():
        # Only the symbols change: the venue's connection settings are the configured ones.
        assert body.ws_url == settings.venues[venue].ws_url
        assert body.book_depth == settings.venues[venue].book_depth


def test_shard_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "shard.yaml"
    path.write_text(yaml.safe_dump({"shard": {"index": 2, "count": 3}}))
    assert load_settings(path, {}).shard == ShardSettings(index=2, count=3)
    # The environment wins over the file (a StatefulSet sets the index per pod, the file the count).
    assert load_settings(path, {"FLOWGAUGE_SHARD__INDEX": "0"}).shard == ShardSettings(index=0, count=3)


@pytest.mark.parametrize(
    ("env", "problems"),
    [
        ({"FLOWGAUGE_SHARD__INDEX": "2", "FLOWGAUGE_SHARD__COUNT": "2"},
         ["shard.index: must be between 0 and 1 (shard.count is 2) (got 2) (set by FLOWGAUGE_SHARD__INDEX)"]),
        ({"FLOWGAUGE_SHARD__INDEX": "1"},
         ["shard.index: must be between 0 and 0 (shard.count is 1) (got 1) (set by FLOWGAUGE_SHARD__INDEX)"]),
        ({"FLOWGAUGE_SHARD__INDEX": "-1", "FLOWGAUGE_SHARD__COUNT": "3"},
         ["shard.index: must be between 0 and 2 (shard.count is 3) (got -1) (set by FLOWGAUGE_SHARD__INDEX)"]),
        ({"FLOWGAUGE_SHARD__COUNT": "0"}, ["shard.count: must be >= 1 (got 0) (set by FLOWGAUGE_SHARD__COUNT)"]),
        ({"FLOWGAUGE_SHARD__INDEX": "-1", "FLOWGAUGE_SHARD__COUNT": "0"},
         ["shard.count: must be >= 1 (got 0) (set by FLOWGAUGE_SHARD__COUNT)",
          "shard.index: must be >= 0 (got -1) (set by FLOWGAUGE_SHARD__INDEX)"]),
        ({"FLOWGAUGE_SHARD__INDEX": "web-0"}, ["shard.index: expected int, got str (set by FLOWGAUGE_SHARD__INDEX)"]),
        ({"FLOWGAUGE_SHARD": "1"},
         ["shard: names a section, not a key: set the keys inside it (set by FLOWGAUGE_SHARD)"]),
    ],
)
def test_bad_shard_settings_get_one_line_each(env: dict[str, str], problems: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env)
    assert sorted(info.value.problems) == sorted(problems)


def test_check_config_prints_the_shard(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"FLOWGAUGE_SHARD__INDEX": "1", "FLOWGAUGE_SHARD__COUNT": "2"}
    assert check_config_main(str(DEFAULT_YAML), True, env) == 0
    out = capsys.readouterr().out
    mine = _shard(1, 2)
    n_mine = sum(len(symbols) for symbols in mine.values())
    first, _, rest = out.partition("\n")
    assert first == f"config OK: 5 venues, 11 symbols; shard 1 of 2 runs {n_mine} of them"
    printed = yaml.safe_load(rest)  # still a loadable config: the shard's instruments are comments
    assert printed["shard"] == {"index": 1, "count": 2}
    comments = [line for line in rest.splitlines() if line.startswith("#")]
    assert comments[0] == f"# shard 1 of 2 (crc32 of venue:symbol mod count) runs {n_mine} instruments:"
    assert comments[1:] == [f"#   {venue}: {', '.join(symbols)}" for venue, symbols in mine.items()]


def test_check_config_says_when_a_shard_has_nothing_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    # With the default instruments one of four shards gets none (crc32 mod 4 leaves shard 3 empty).
    empty = [index for index in range(4) if not _shard(index, 4)]
    assert empty, "the default instruments no longer leave a shard of 4 empty: pick another count here"
    env = {"FLOWGAUGE_SHARD__INDEX": str(empty[0]), "FLOWGAUGE_SHARD__COUNT": "4"}
    assert check_config_main(None, False, env) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"config OK: 5 venues, 11 symbols; shard {empty[0]} of 4 runs 0 of them (nothing to do: it will run idle)"
    ]
