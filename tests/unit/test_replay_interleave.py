"""Interleaved replay (`replay(..., interleave=True)`): several venues' recordings merged by receive time.

The fixtures of two venues were recorded years apart, so the test moves one recording's receive times onto the
other's (a copy, as plain jsonl): the merged replay must hand the engine their frames in receive-time order, and
publish for each book exactly what the sequential replay of the same files publishes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from tests.conftest import FIXTURES

from flowgauge.replay.replay import ReplayError, replay

OKX = FIXTURES / "okx" / "okx-v5-2022-05.jsonl.zst"  # 240 s of receive time
HYPERLIQUID = FIXTURES / "hyperliquid" / "hyperliquid-btc-2025-01.jsonl.zst"  # 25 s


def _shifted(source: Path, target: Path, seconds: float) -> Path:
    """`source` as plain jsonl with every record's receive time moved by `seconds`."""
    lines = zstandard.ZstdDecompressor().stream_reader(source.open("rb")).read().splitlines()
    out = []
    for line in lines:
        record = orjson.loads(line)
        if "ts" in record:
            record["ts"] += seconds
        out.append(orjson.dumps(record))
    target.write_bytes(b"\n".join(out) + b"\n")
    return target


def _run(paths: list[Path], interleave: bool) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    replay(paths, lambda t, b: out.append((t, orjson.loads(b))), clock=lambda: 0, interleave=interleave)
    return out


def _by_topic(messages: list[tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    topics: dict[str, list[dict[str, Any]]] = {}
    for topic, payload in messages:
        topics.setdefault(topic, []).append(payload)
    return topics


def test_frames_are_merged_by_receive_time_and_every_book_publishes_the_same(tmp_path: Path) -> None:
    okx = _shifted(OKX, tmp_path / "okx.jsonl", 0.0)
    # Hyperliquid's 25 s moved into the middle of OKX's 240 s.
    hyperliquid = _shifted(HYPERLIQUID, tmp_path / "hl.jsonl", 1652459100.0 - 1737918843.0)
    sequential = _run([okx, hyperliquid], interleave=False)
    merged = _run([okx, hyperliquid], interleave=True)
    assert _by_topic(merged) == _by_topic(sequential)
    # Sequentially every OKX payload comes first; merged, the venues alternate in receive-time order.
    venues = [payload["venue"] for _, payload in merged if "venue" in payload]
    assert venues.index("hyperliquid") < len(venues) - venues[::-1].index("okx") - 1
    received = [payload["ts_recv"] for _, payload in merged if "ts_recv" in payload]
    assert received == sorted(received)


def test_a_file_that_cannot_be_replayed_is_reported_and_the_others_replayed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    failed: list[tuple[str, str]] = []
    out: list[str] = []
    _, stats = replay([bad, OKX], lambda t, b: out.append(t), interleave=True,
                      on_file_error=lambda path, why: failed.append((path, why)))  # fmt: skip
    assert [path for path, _ in failed] == [str(bad)] and stats.failed == failed
    assert out and stats.files_done == stats.files_total == 2
    # Without on_file_error the first such file raises, as in a sequential replay.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ReplayError, match="no header line"):
        replay([empty], lambda t, b: None, interleave=True)
