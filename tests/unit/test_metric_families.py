"""Metric families (metrics.families): the config key `publish.families`, the `metrics` parameters, and what the
engine publishes for a selection (key set and order, unselected families absent), under both cores."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import orjson
import pytest
from tests.conftest import linear_instrument

import flowgauge
from flowgauge import core
from flowgauge.app import metric_params
from flowgauge.config import (
    DEFAULT_METRIC_FAMILIES,
    METRIC_FAMILIES,
    ConfigError,
    MetricsSettings,
    check_config_main,
    parse_settings,
)
from flowgauge.core.source_hash import source_hash
from flowgauge.engine import Engine
from flowgauge.metrics.families import CORE, DEFAULT_FAMILIES, FAMILIES, UnknownFamily, family_fields, resolve
from flowgauge.metrics.params import MetricParams, MicropriceParams
from flowgauge.replay.replay import replay
from flowgauge.types import BestQuote, BookDelta, BookSnapshot

S = 1_000_000_000
SYM = "BTC/USDT:USDT"
ENVELOPE = 11  # schema .. ts_publish
RECORDING = Path(__file__).resolve().parents[1] / "fixtures" / "binanceusdm" / "binance-usdm-2021-07.jsonl.zst"


def settings_with(**sections: object) -> dict[str, object]:
    return {"venues": {"bybit": {"symbols": [SYM]}}, **sections}


def test_the_config_knows_the_same_families_and_defaults() -> None:
    # config imports nothing above types, so it keeps its own copy of the names and of the parameter structs.
    assert tuple(FAMILIES) == METRIC_FAMILIES
    assert DEFAULT_METRIC_FAMILIES == DEFAULT_FAMILIES
    assert msgspec.to_builtins(MetricsSettings()) == msgspec.to_builtins(MetricParams())


def test_an_unknown_family_is_one_problem_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("publish:\n  families: [core, mlofii, microprice]\n")
    assert check_config_main(str(path), False, {}) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("publish.families: unknown metric family 'mlofii'; known: core, ofi_l1, ")
    assert line.endswith(", all")


def test_families_from_the_file_and_the_environment() -> None:
    assert parse_settings(settings_with()).publish.families == DEFAULT_FAMILIES
    settings = parse_settings(settings_with(publish={"families": ["all"]}))
    assert resolve(settings.publish.families) == tuple(FAMILIES)
    settings = parse_settings(settings_with(), {"FLOWGAUGE_PUBLISH__FAMILIES": "depth_ext,core"})
    assert settings.publish.families == ("depth_ext", "core")
    with pytest.raises(ConfigError) as info:
        parse_settings(settings_with(), {"FLOWGAUGE_PUBLISH__FAMILIES": "core,nope,nada"})
    assert info.value.problems[0].startswith("publish.families: unknown metric families 'nope', 'nada'; known:")


def test_family_parameters_are_validated_and_reach_the_metrics() -> None:
    metrics = {
        "mlofi": {"levels": 4},
        "integrated_ofi": {"weights": [4.0, 3.0, 2.0, 1.0]},
        "microprice": {"imbalance_buckets": 6, "sample_ms": 250},
        "ofi_ext": {"cks_window_s": 600},
    }
    params = metric_params(parse_settings(settings_with(metrics=metrics)))
    assert params.mlofi.levels == 4 and params.integrated_ofi.weights == (4.0, 3.0, 2.0, 1.0)
    assert params.microprice.imbalance_buckets == 6 and params.microprice.sample_ms == 250
    assert params.ofi_ext.cks_window_s == 600.0 and params.depth_ext == MetricParams().depth_ext
    bad = {
        "mlofi": {"levels": 0},
        "integrated_ofi": {"weights": [1.0, 2.0]},
        "microprice": {"max_spread_ticks": 0, "memory_days": -1},
        "depth_ext": {"level_decay": 0},
    }
    with pytest.raises(ConfigError) as info:
        parse_settings(settings_with(metrics=bad))
    assert sorted(info.value.problems) == [
        "metrics.depth_ext.level_decay: must be a finite number > 0 (got 0)",
        "metrics.microprice.max_spread_ticks: must be between 1 and 20 (got 0)",
        "metrics.microprice.memory_days: must be a finite number > 0 (got -1)",
        "metrics.mlofi.levels: must be between 1 and 50 (got 0)",
    ]
    with pytest.raises(ConfigError) as info:
        parse_settings(settings_with(metrics={"integrated_ofi": {"weights": [1.0, 2.0]}}))
    assert info.value.problems == [
        "metrics.integrated_ofi.weights: must hold metrics.mlofi.levels (10) numbers, or none (got 2)"
    ]


def test_resolve_orders_by_the_registry_and_always_keeps_core() -> None:
    assert resolve(["microprice", "mlofi"]) == (CORE, "mlofi", "microprice")
    assert resolve(["all"]) == tuple(FAMILIES)
    with pytest.raises(UnknownFamily, match="unknown metric family 'x'"):
        resolve(["core", "x"])
    keys = family_fields(resolve(["all"]))
    assert len(keys) == len(set(keys)), "a key in two families"


def run(core_name: str, families: tuple[str, ...]) -> list[dict[str, object]]:
    core.select(core_name)
    out: list[dict[str, object]] = []
    engine = Engine(lambda topic, payload: out.append(orjson.loads(payload)), clock=lambda: 0, families=families)
    engine.add_instrument(linear_instrument())
    engine.handle(BookSnapshot("bybit", SYM, ((100.0, 5.0), (99.9, 1.0)), ((100.1, 3.0),), 10, S, S))
    engine.handle(BookDelta("bybit", SYM, ((100.0, 7.0),), (), 11, None, 2 * S, 2 * S))
    return [payload for payload in out if "trigger" in payload]


@pytest.mark.parametrize("core_name", core.CORES)
def test_the_payload_holds_exactly_the_selected_families_in_registry_order(core_name: str) -> None:
    if core_name == core.COMPILED and core.fallback_reason() is not None:
        pytest.fail(f"compiled core unavailable: {core.fallback_reason()}")
    previous = core.active_core()
    try:
        payloads = run(core_name, ("depth_ext", "ofi_ext"))
        assert len(payloads) == 2
        for payload in payloads:
            assert tuple(payload)[ENVELOPE:] == (*FAMILIES[CORE], *FAMILIES["ofi_ext"], *FAMILIES["depth_ext"])
        assert payloads[1]["ofi_ratio_1s"] == 1.0 and payloads[1]["di_lvl_5"] is not None
        (payload,) = run(core_name, ("core",))[1:]
        assert tuple(payload)[ENVELOPE:] == FAMILIES[CORE]
        (payload,) = run(core_name, DEFAULT_FAMILIES)[1:]
        assert tuple(payload)[ENVELOPE:] == family_fields(resolve(DEFAULT_FAMILIES))
        assert "mlofi_10s" not in payload and "micro_price" in payload
    finally:
        core.select(previous)


def test_the_engine_refuses_an_unknown_family() -> None:
    with pytest.raises(UnknownFamily):
        Engine(lambda topic, payload: None, families=("core", "bogus"))


def test_every_family_validates_against_the_payload_schema() -> None:
    """A recording replayed with every family (the micro-price fitted fast enough to publish): a sample of its
    metrics payloads validate against schema/payload.v1.json, which names every field of the per-book-event
    families of metrics.md 1.3 to 4 (their owners add the other families' fields)."""
    schema = json.loads(flowgauge.schema_path("payload").read_text())
    assert set(family_fields(("core", "ofi_ext", "mlofi", "depth_ext", "microprice"))) <= set(schema["properties"])
    fast = MetricParams(microprice=MicropriceParams(sample_ms=50, min_samples=100, refit_s=20.0))
    out: list[bytes] = []
    previous = core.active_core()
    try:
        core.select(core.PYTHON)
        replay([RECORDING], lambda topic, payload: out.append(payload) if topic.count(".") == 3 else None,
               clock=lambda: 0, families=("all",), metric_params=fast)  # fmt: skip
    finally:
        core.select(previous)
    payloads = [orjson.loads(payload) for payload in out]
    assert any(p["micro_price"] is not None for p in payloads) and any(p["mlofi_10s"] for p in payloads)
    validator = jsonschema.validators.validator_for(schema)(schema)
    for payload in payloads[::7]:
        validator.validate(payload)


def test_the_compiled_families_source_is_part_of_the_core_hash(tmp_path: Path) -> None:
    """The compiled core is stale when metrics/book_families.py (compiled as core._families) changes, as when
    _core.pyx does: its hash covers both."""
    here = Path(flowgauge.__file__).parent
    (tmp_path / "core").mkdir()
    (tmp_path / "metrics").mkdir()
    for name in ("core/_core.pyx", "core/_core.pxd", "metrics/book_families.py"):
        (tmp_path / name).write_bytes((here / name).read_bytes())
    before = source_hash(tmp_path / "core")
    assert before == source_hash(here / "core")
    with (tmp_path / "metrics" / "book_families.py").open("a") as f:
        f.write("\n# changed\n")
    assert source_hash(tmp_path / "core") != before


BOOK_EVENT_FAMILIES = ("core", "ofi_ext", "mlofi", "depth_ext", "microprice")


def random_deltas(seed: int, n: int) -> list[BookDelta]:
    """Book deltas on both sides (bids below 100, asks above: never crossed), some levels deleted."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        bids = [(100.0 - 0.5 * rng.randrange(1, 12), float(rng.choice([0, 0, 1, 2, 5, 9]))) for _ in range(3)]
        asks = [(100.0 + 0.5 * rng.randrange(1, 12), float(rng.choice([0, 0, 1, 2, 5, 9]))) for _ in range(3)]
        t = 2 * S + i * 150_000_000 + rng.randrange(0, 100) * 1_000_000
        out.append(BookDelta("bybit", SYM, tuple(dict(bids).items()), tuple(dict(asks).items()), 11 + i, None, t, t))
    return out


@pytest.mark.parametrize("core_name", core.CORES)
def test_batching_changes_no_family_value(core_name: str) -> None:
    """T15: the same book messages published one by one, or in batches of random size (conflation: each batch
    publishes its last state), give the same values at every state both publish (exchange time moving forward
    with jitter, within the windows' late horizon)."""
    if core_name == core.COMPILED and core.fallback_reason() is not None:
        pytest.fail(f"compiled core unavailable: {core.fallback_reason()}")
    runs: list[list[dict[str, object]]] = [[], []]
    engines = [
        Engine(
            lambda topic, payload, out=out: out.append(orjson.loads(payload)),
            clock=lambda: 0,
            core_name=core_name,
            families=("all",),
            metric_params=MetricParams(
                microprice=MicropriceParams(max_spread_ticks=20, sample_ms=50, min_samples=50, refit_s=5.0)
            ),
        )
        for out in runs
    ]
    events = random_deltas(3, 400)
    snapshot = BookSnapshot("bybit", SYM, ((99.5, 5.0), (99.0, 1.0)), ((100.5, 3.0),), 10, S, S)
    for engine in engines:
        engine.add_instrument(linear_instrument(tick=0.5))
        engine.handle(snapshot)
    engines[0].handle_all(events)
    rng = random.Random(4)
    i = 0
    while i < len(events):
        size = rng.randrange(1, 9)
        engines[1].conflate = True
        engines[1].handle_all(events[i : i + size])
        engines[1].conflate = False
        engines[1].flush_conflated()
        i += size
    by_state = {p["book_seq"]: p for p in runs[0] if p.get("trigger") == "book"}
    batched = [p for p in runs[1] if p.get("trigger") == "book"]
    assert 40 < len(batched) < len(by_state)
    assert any(p["micro_price"] is not None for p in batched)
    # core (but its publish counter, time and flags) and the per-book-event families; ofi_l1 is the flow since the
    # previous payload and the risk family samples at payloads, both by design.
    keys = [k for k in family_fields(BOOK_EVENT_FAMILIES) if k not in ("seq", "ts_publish", "quality")]
    for payload in batched:
        plain = by_state[payload["book_seq"]]
        assert [payload[k] for k in keys] == [plain[k] for k in keys]


def with_best_quotes(seed: int, deltas: list[BookDelta]) -> list[object]:
    """`deltas` with 0 to 3 best quotes before each, stamped up to 150 ms before it (some before the previous delta:
    a quote stream and a depth stream are not in step); sizes whole numbers, so every sum is exact."""
    rng = random.Random(seed)
    out: list[object] = []
    for d in deltas:
        for _ in range(rng.randrange(0, 4)):
            bid, ask = 100.0 - 0.5 * rng.randrange(1, 4), 100.0 + 0.5 * rng.randrange(1, 4)
            t = d.ts_exchange - rng.randrange(0, 150) * 1_000_000
            out.append(BestQuote("bybit", SYM, bid, float(rng.randrange(1, 9)), ask, float(rng.randrange(1, 9)),
                                 None, t, t))  # fmt: skip
        out.append(d)
    return out


def out_to(out: list[dict[str, Any]]) -> Callable[[str, bytes], None]:
    return lambda topic, payload: out.append(orjson.loads(payload))


@pytest.mark.parametrize("core_name", core.CORES)
def test_batching_changes_no_ofi_l1_value(core_name: str) -> None:
    """T15 for ofi_l1: the same book and best-quote messages handled one by one, in chunks of random size, or in
    conflated batches (each batch publishes its last book state) give the same L1 fields: chunks the same payloads,
    batches the same windowed fields at every state both publish, and as `ofi_l1` (the flow since the previous
    payload) the sum of the ones the batch replaced, so no L1 flow is lost or counted twice."""
    if core_name == core.COMPILED and core.fallback_reason() is not None:
        pytest.fail(f"compiled core unavailable: {core.fallback_reason()}")
    runs: list[list[dict[str, Any]]] = [[], [], []]
    engines = [Engine(out_to(out), clock=lambda: 0, core_name=core_name, families=("core", "ofi_l1")) for out in runs]
    events = with_best_quotes(5, random_deltas(6, 300))
    snapshot = BookSnapshot("bybit", SYM, ((99.5, 5.0), (99.0, 1.0)), ((100.5, 3.0),), 10, S, S)
    for engine in engines:
        engine.add_instrument(linear_instrument(tick=0.5))
        engine.handle(snapshot)
    plain, chunked, conflating = engines
    plain.handle_all(events)
    rng = random.Random(7)
    i = 0
    while i < len(events):
        size = rng.randrange(1, 12)
        chunked.handle_all(events[i : i + size])
        conflating.conflate = True
        conflating.handle_all(events[i : i + size])
        conflating.conflate = False
        conflating.flush_conflated()
        i += size
    assert runs[1] == runs[0]
    by_state = {p["book_seq"]: p for p in runs[0] if p.get("trigger") == "book"}
    batched = [p for p in runs[2] if p.get("trigger") == "book"]
    assert 30 < len(batched) < len(by_state) // 2
    assert "best_quote" in {p["source_granularity"] for p in batched}  # from the first quote on
    windows = [k for k in FAMILIES["ofi_l1"] if k != "ofi_l1"]  # and source_granularity
    plain_seqs = sorted(by_state)
    previous = None
    for payload in batched:
        state = by_state[payload["book_seq"]]
        assert [payload[k] for k in windows] == [state[k] for k in windows], payload["book_seq"]
        replaced = [by_state[s]["ofi_l1"] for s in plain_seqs if (previous is None or s > previous)
                    and s <= payload["book_seq"]]  # fmt: skip
        flows = [x for x in replaced if x is not None]
        assert payload["ofi_l1"] == (math.fsum(flows) if flows else None), payload["book_seq"]
        previous = payload["book_seq"]
    # not trivially equal: many batches' flow differs from their last state's own (it sums the replaced ones too)
    assert sum(1 for p in batched if p["ofi_l1"] != by_state[p["book_seq"]]["ofi_l1"]) > 20


BYBIT = Path(__file__).resolve().parents[1] / "fixtures" / "bybit" / "bybit-linear-2026-08.jsonl.zst"


def replay_cli(*args: str) -> subprocess.CompletedProcess[str]:
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "service"), str(repo)])}
    command = [sys.executable, "-m", "flowgauge", "replay", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_replay_with_a_config_publishes_its_families_and_parameters(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("publish:\n  families: [mlofi]\nmetrics:\n  mlofi:\n    levels: 3\n")
    out = tmp_path / "out.jsonl"
    done = replay_cli("-c", str(config), str(BYBIT), "--out", str(out))
    assert done.returncode == 0, done.stderr
    payloads = [orjson.loads(line)["payload"] for line in out.read_bytes().splitlines()]
    books = [p for p in payloads if p.get("trigger") == "book"]
    assert books and all(len(p["mlofi_10s"]) == 3 for p in books if p["mlofi_10s"] is not None)
    assert all("micro_price" not in p for p in books)  # not selected: not published
    config.write_text("publish:\n  families: [core, mlofy]\n")
    done = replay_cli("-c", str(config), str(BYBIT))
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "publish.families: unknown metric family 'mlofy'; known: core, " in line
