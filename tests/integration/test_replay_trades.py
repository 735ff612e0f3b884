"""`flowgauge replay --out` and `publish.trades` (issue 9 item 8), as a user runs it: a real subprocess.

Off by default: the output holds no trade record. With `publish.trades: true` from `-c FILE`, or from
`FLOWGAUGE_PUBLISH__TRADES=true` without `-c`, it holds every trade record too, and every other line is the
same as without (ts_publish aside: the CLI stamps the wall clock); the clock bars of `publish.bars` are written either
way. A bad value is one line and exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from tests.conftest import BYBIT_RECORDING
from tests.procs import TIMEOUT_FACTOR

from flowgauge.app import bar_spec
from flowgauge.config import load_settings
from flowgauge.publish import topics
from flowgauge.replay.replay import replay

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT", "DOGE/USDT:USDT"]  # the recording's derivatives


def run_replay(tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, Path]:
    out = tmp_path / f"{name}.jsonl"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLOWGAUGE_")}
    result = subprocess.run(
        [sys.executable, "-m", "flowgauge", "replay", str(BYBIT_RECORDING), "--out", str(out), *args],
        capture_output=True, text=True, timeout=120 * TIMEOUT_FACTOR, env={**environ, **(env or {})},
    )
    return result.returncode, result.stderr, out


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def without_publish_time(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for message in messages:
        message["payload"].pop("ts_publish")
    return messages


def test_replay_writes_trade_records_only_when_publish_trades_is_on(tmp_path: Path) -> None:
    config = tmp_path / "trades.yaml"
    config.write_text(yaml.safe_dump({"venues": {"bybit": {"symbols": SYMBOLS}}, "publish": {"trades": True}}))
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"venues": {"bybit": {"symbols": SYMBOLS}}}))

    code, err, default_out = run_replay(tmp_path, "default")
    assert code == 0, err
    code, err, plain_out = run_replay(tmp_path, "plain", "-c", str(plain))
    assert code == 0, err
    code, err, config_out = run_replay(tmp_path, "config", "-c", str(config))
    assert code == 0, err
    code, err, env_out = run_replay(tmp_path, "env", env={"FLOWGAUGE_PUBLISH__TRADES": "true"})
    assert code == 0, err

    default = lines(default_out)
    assert default and not [m for m in default if topics.is_trades_topic(m["topic"])]
    # The clock bars of publish.bars (on by default) are written too: as many as the library replay publishes.
    expected: list[str] = []
    replay([BYBIT_RECORDING], lambda t, _: expected.append(t), clock=lambda: 0, bars=bar_spec(load_settings(None, {})))
    assert [m["topic"] for m in default] == expected
    assert [m for m in default if m["topic"].startswith(f"{topics.PREFIX}.bars.")]
    assert not [m for m in lines(plain_out) if topics.is_trades_topic(m["topic"])]
    for out in (config_out, env_out):
        messages = lines(out)
        records = [m["payload"] for m in messages if topics.is_trades_topic(m["topic"])]
        assert len(records) > 50 and {r["kind"] for r in records} == {"trade"}
        assert {r["symbol"] for r in records} >= {"BTC/USDT:USDT", "ETH/USDT:USDT"}
        others = [m for m in messages if not topics.is_trades_topic(m["topic"])]
        assert without_publish_time(others) == without_publish_time(lines(default_out))


def test_a_bad_publish_trades_value_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, err, _ = run_replay(tmp_path, "bad", env={"FLOWGAUGE_PUBLISH__TRADES": "sometimes"})
    assert code == 2
    assert "publish.trades: expected bool, got str (set by FLOWGAUGE_PUBLISH__TRADES)" in err
    assert "Traceback" not in err
