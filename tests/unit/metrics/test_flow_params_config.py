"""The trade_flow / positioning parameters: config's copies equal metrics.flow_params (fields and defaults), the
YAML defaults load, and a bad value is one clear problem line."""

from __future__ import annotations

import msgspec
import pytest

from flowgauge.config import ConfigError, PositioningSettings, TradeFlowSettings, parse_settings
from flowgauge.metrics.flow_params import PositioningParams, TradeFlowParams

VENUES = {"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"]}}}


@pytest.mark.parametrize(("settings", "params"), [(TradeFlowSettings, TradeFlowParams),
                                                    (PositioningSettings, PositioningParams)])  # fmt: skip
def test_config_copies_equal_the_metric_params(settings: type, params: type) -> None:
    assert msgspec.to_builtins(settings()) == msgspec.to_builtins(params())
    loaded = parse_settings(VENUES, {}).metrics
    name = "trade_flow" if settings is TradeFlowSettings else "positioning"
    assert msgspec.to_builtins(getattr(loaded, name)) == msgspec.to_builtins(params())


@pytest.mark.parametrize(
    ("section", "why"),
    [({"positioning": {"rho_min": 1.5}}, "metrics.positioning.rho_min: must be a number in [0, 1) (got 1.5)"),
     ({"positioning": {"funding_scale": 0}}, "metrics.positioning.funding_scale: must be a finite number > 0"),
     ({"positioning": {"regime_confirm_windows": 0}}, "metrics.positioning.regime_confirm_windows: must be >= 1"),
     ({"trade_flow": {"toxicity": {"window_buckets": 0}}}, "metrics.trade_flow.toxicity.window_buckets: must be >= 1"),
     ({"trade_flow": {"kyle": {"min_bars": 1}}}, "metrics.trade_flow.kyle.min_bars: must be >= 2")],
)  # fmt: skip
def test_a_bad_value_is_one_problem_line(section: dict[str, object], why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({**VENUES, "metrics": section}, {})
    problems = caught.value.problems
    assert len(problems) == 1 and why in problems[0], problems
    assert "\n" not in problems[0]
