"""A client-only install (`pip install --no-deps flowgauge websockets orjson`) as a user meets it.

A real subprocess of the CLI whose `import msgspec` fails the way it does when msgspec is not installed
(a `msgspec.py` first on PYTHONPATH raising ModuleNotFoundError): the daemon's commands say which module is
missing and how to get it, in one line; `tail`, which a client-only install is for, still works.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.procs import TIMEOUT_FACTOR, free_port

pytestmark = pytest.mark.integration


def run_without_msgspec(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    shadow = tmp_path / "no-msgspec"
    shadow.mkdir(exist_ok=True)
    (shadow / "msgspec.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'msgspec'\", name='msgspec')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "flowgauge", *args],
        capture_output=True, text=True, env=env, timeout=60 * TIMEOUT_FACTOR,
    )


@pytest.mark.parametrize(
    "args", [["run", "-c", "offline-demo"], ["check-config"], ["replay", "recording.jsonl.zst"]], ids=" ".join
)
def test_a_daemon_command_names_the_missing_module_in_one_line(args: list[str], tmp_path: Path) -> None:
    result = run_without_msgspec(tmp_path, *args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    # The compiled-core notice is the CLI's own and unrelated to the install: not part of this check.
    lines = [line for line in result.stderr.splitlines() if not line.startswith("flowgauge: warning:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"flowgauge {args[0]}: module 'msgspec' is not installed"), lines[0]
    assert "pip install flowgauge" in lines[0]


def test_tail_works_without_the_daemons_dependencies(tmp_path: Path) -> None:
    result = run_without_msgspec(tmp_path, "tail", "--url", f"ws://127.0.0.1:{free_port()}")
    assert result.returncode == 1  # no daemon there: tail's own message, not a missing module
    assert result.stderr.startswith("tail: cannot connect to the bus"), result.stderr
