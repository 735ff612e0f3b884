"""Config of the fragility / ew / risk families (metrics.*) and of the clock bars (publish.bars)."""

from __future__ import annotations

import msgspec
import pytest

from flowgauge.app import bar_spec, metric_params
from flowgauge.config import (
    BarSettings,
    ConfigError,
    EwSettings,
    FragilitySettings,
    RiskSettings,
    builtin_config,
    parse_settings,
)
from flowgauge.metrics.bar_feed import BarSpec
from flowgauge.metrics.params import EwParams, FragilityParams, RiskParams

BASE = {"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"]}}}


@pytest.mark.parametrize(
    ("settings", "params"), [(FragilitySettings, FragilityParams), (EwSettings, EwParams), (RiskSettings, RiskParams)]
)
def test_config_sections_have_the_metric_layers_fields_and_defaults(settings: type, params: type) -> None:
    assert msgspec.to_builtins(settings()) == msgspec.to_builtins(params())


def test_default_yaml_spells_out_the_defaults() -> None:
    data = builtin_config("default")
    assert data["metrics"]["risk"] == msgspec.to_builtins(RiskSettings())
    assert data["metrics"]["fragility"] == msgspec.to_builtins(FragilitySettings())
    assert data["metrics"]["ew"] == msgspec.to_builtins(EwSettings())
    assert data["publish"]["bars"] == msgspec.to_builtins(BarSettings())


def test_values_reach_the_engine() -> None:
    settings = parse_settings({
        **BASE,
        "metrics": {"risk": {"floor": 0.2, "oi_weight": 0.0}, "fragility": {"slope_levels": 5}},
        "publish": {"bars": {"interval_s": 10, "z_min_samples": 5}},
    })  # fmt: skip
    params = metric_params(settings)
    assert params.risk.floor == 0.2 and params.risk.oi_weight == 0.0 and params.fragility.slope_levels == 5
    assert bar_spec(settings) == BarSpec(10.0, 86400.0, 5)
    assert bar_spec(parse_settings({**BASE, "publish": {"bars": {"enabled": False}}})) is None


def test_bad_values_are_one_line_each() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({
            **BASE,
            "metrics": {
                "risk": {"floor": 0.0, "toxicity_scale": -1.0, "oi_weight": -2.0, "vol_min_samples": 0,
                         "stress_threshold": float("nan")},
                "fragility": {"slope_levels": 0, "resiliency_half_life_s": 0},
                "ew": {"z_min_samples": 1, "z_half_life_s": float("inf")},
            },
            "publish": {"bars": {"interval_s": 0.0001, "close_delay_ms": -1, "z_min_samples": 1}},
        })  # fmt: skip
    problems = caught.value.problems
    for key in (
        "metrics.risk.floor", "metrics.risk.toxicity_scale", "metrics.risk.oi_weight", "metrics.risk.vol_min_samples",
        "metrics.risk.stress_threshold", "metrics.fragility.slope_levels", "metrics.fragility.resiliency_half_life_s",
        "metrics.ew.z_min_samples", "metrics.ew.z_half_life_s", "publish.bars.interval_s",
        "publish.bars.close_delay_ms", "publish.bars.z_min_samples",
    ):  # fmt: skip
        assert sum(p.startswith(f"{key}:") for p in problems) == 1, (key, problems)
