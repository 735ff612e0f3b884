"""Every message replayed from the test fixtures of all five venues validates against its kind's JSON Schema.

The replay publishes every kind: metrics payloads with every metric family (`publish.families: [all]`), statuses,
trade records (`publish.trades`), clock bars (`publish.bars`) and cross-venue aggregates (with `min_venues: 1`, as
each fixture holds one venue). The schema is chosen by the topic's family, as the SDK chooses its Struct.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from tests.conftest import FIXTURES

import flowgauge
from flowgauge.metrics.aggregate import CrossVenueAggregates
from flowgauge.metrics.bar_feed import BarSpec
from flowgauge.metrics.families import ALL
from flowgauge.publish import topics
from flowgauge.replay.replay import replay

RECORDINGS = sorted(FIXTURES.glob("*/*.jsonl.zst"))
VALIDATORS = {
    kind: jsonschema.Draft202012Validator(json.loads(flowgauge.schema_path(kind).read_text()))
    for kind in ("payload", "status", "trade", "agg", "bars")
}


def _kind(topic: str) -> str:
    """The schema of a topic's family (as `flowgauge.sdk.payloads` tells the family)."""
    family = topic.split(".")[2]
    return {"status": "status", "trades": "trade", "agg": "agg", "bars": "bars"}.get(family, "payload")


@functools.cache  # each recording replayed once for the module's tests
def _replayed(path: Path) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    replay(
        [path],
        lambda topic, body: out.append((topic, orjson.loads(body))),
        publish_trades=True,
        aggregates=CrossVenueAggregates(min_venues=1),
        families=[ALL],
        bars=BarSpec(interval_s=1.0),
    )
    return out


def test_the_fixtures_cover_all_five_venues() -> None:
    assert {path.parent.name for path in RECORDINGS} == {"binanceusdm", "bybit", "deribit", "hyperliquid", "okx"}


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_every_replayed_message_validates(path: Path) -> None:
    messages = _replayed(path)
    kinds: Counter[str] = Counter()
    for topic, payload in messages:
        kind = _kind(topic)
        kinds[kind] += 1
        errors = sorted(VALIDATORS[kind].iter_errors(payload), key=lambda e: list(e.path))
        assert not errors, f"{topic} seq {payload.get('seq')}: " + "; ".join(
            f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message[:200]}" for e in errors[:5]
        )
        assert topic.startswith(topics.PREFIX)
        # The schemas admit fields they do not name (v1 grows by adding fields; an older schema must accept a newer
        # daemon's payloads), so that a field is described at all is checked here.
        undescribed = set(payload) - set(VALIDATORS[kind].schema["properties"])
        assert not undescribed, f"{topic}: fields not in {kind}.v1.json: {sorted(undescribed)}"
    # Every recording yields metrics payloads, statuses and bars at least.
    assert kinds["payload"] and kinds["status"] and kinds["bars"], kinds


def test_every_kind_is_exercised_across_the_fixtures() -> None:
    """Trade records and aggregates come from the recordings that have trades and more than a second of books."""
    kinds = Counter(_kind(topic) for path in RECORDINGS for topic, _ in _replayed(path))
    assert set(kinds) == {"payload", "status", "trade", "agg", "bars"}, kinds
