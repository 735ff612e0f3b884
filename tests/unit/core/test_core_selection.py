"""FLOWGAUGE_CORE chooses the hot core; the CLI reports a core that cannot run in one line with exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import BYBIT_RECORDING

REPO = Path(__file__).resolve().parents[3]

# Runs the real CLI in a fresh interpreter where the compiled extension cannot be imported (as on a machine
# without a compiler), so the fallback and the forced-compiled error are exercised for real.
WITHOUT_EXTENSION = """
import sys
class _NoExtension:
    def find_spec(self, name, path=None, target=None):
        if name == "flowgauge.core._core":
            raise ImportError("no compiled core here")
        return None
sys.meta_path.insert(0, _NoExtension())
from flowgauge.cli import main
main(sys.argv[1:])
"""


def run_cli(args: list[str], core: str | None, *, without_extension: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLOWGAUGE_CORE"}
    if core is not None:
        env["FLOWGAUGE_CORE"] = core
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "service"), str(REPO)])
    command = (
        [sys.executable, "-c", WITHOUT_EXTENSION, *args]
        if without_extension
        else [sys.executable, "-m", "flowgauge", *args]
    )
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_forcing_an_unbuilt_compiled_core_is_one_line_and_exit_2() -> None:
    done = run_cli(["replay", str(BYBIT_RECORDING)], "compiled", without_extension=True)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "FLOWGAUGE_CORE=compiled" in done.stderr and "not built" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_core_is_one_line_and_exit_2() -> None:
    done = run_cli(["replay", str(BYBIT_RECORDING)], "fortran")
    assert done.returncode == 2
    assert done.stderr.strip() == "flowgauge: FLOWGAUGE_CORE must be one of python, compiled, got 'fortran'"


def test_without_the_extension_the_python_core_runs_with_a_warning(tmp_path: Path) -> None:
    out = tmp_path / "payloads.jsonl"
    done = run_cli(["replay", str(BYBIT_RECORDING), "--out", str(out)], None, without_extension=True)
    assert done.returncode == 0, done.stderr
    assert "warning: running the pure-Python core" in done.stderr
    assert '"trigger":"book"' in out.read_text()


def test_forcing_python_runs_python_quietly(tmp_path: Path) -> None:
    out = tmp_path / "payloads.jsonl"
    done = run_cli(["replay", str(BYBIT_RECORDING), "--out", str(out)], "python")
    assert done.returncode == 0, done.stderr
    assert "pure-Python core" not in done.stderr
    assert '"trigger":"book"' in out.read_text()


def test_status_says_which_core_runs() -> None:
    from flowgauge import core
    from flowgauge.engine import Engine

    previous = core.active_core()
    try:
        for name in core.CORES:
            core.select(name)
            assert Engine(lambda topic, payload: None).status()["core"] == name
    finally:
        core.select(previous)


def test_the_parsers_level_check_follows_the_core() -> None:
    from flowgauge import core
    from flowgauge.connectors import levels
    from flowgauge.core import _core

    previous = core.active_core()
    bad = ((100.0, 1.0), (float("nan"), 1.0))
    try:
        core.select("python")
        assert levels._validator is levels.reference_valid_levels
        assert levels.valid_sides is levels.reference_valid_sides
        assert levels.string_levels is levels.action_levels is levels.dict_levels is levels._no_fast_path
        assert levels.valid_levels(bad) is False
        core.select("compiled")
        assert levels._validator is _core.valid_levels
        assert levels.valid_sides is _core.valid_sides
        assert levels.string_levels is _core.string_levels
        assert levels.action_levels is _core.action_levels and levels.dict_levels is _core.dict_levels
        assert levels.valid_levels(bad) is False and levels.valid_levels(((100.0, 1.0),)) is True
        assert levels.valid_sides(((100.0, 1.0),), bad) is False
        assert levels.valid_sides(((100.0, 1.0),), ((101.0, 1.0),)) is True
    finally:
        core.select(previous)
