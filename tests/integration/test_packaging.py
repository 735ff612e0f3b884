"""A non-editable install works away from the checkout: sdist -> wheel -> a fresh venv, run from elsewhere.

The built-in configs must ship inside the wheel (byte-identical to config/*.yaml, their only copy) and
`-c default` / `-c offline-demo` must find them; the import name is `flowgauge` and no top-level `service`
is installed. Dependencies are not reinstalled: the fresh venv sees this environment's site-packages
through a .pth line (a plain path entry, so the editable install's own .pth hook is not run there).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ("default.yaml", "offline-demo.yaml")


@dataclass(frozen=True)
class Installed:
    sdist: Path
    wheel: Path
    python: Path  # the fresh venv's interpreter
    flowgauge: Path  # its console script
    outside: Path  # a working directory outside the checkout
    env: dict[str, str]


def _run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("packaging")
    dist = work / "dist"
    # The sdist through setuptools' PEP 517 hook (what `python -m build --sdist` calls), then the wheel from
    # that sdist, so a wheel built by `pip install .` from an sdist is what gets tested.
    _ok(_run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"],
             REPO))
    (sdist,) = dist.glob("flowgauge-*.tar.gz")
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
              "-w", dist, sdist], work))
    (wheel,) = dist.glob("flowgauge-*.whl")

    venv = work / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", venv], work))
    python = venv / "bin" / "python"
    _ok(_run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
             work))
    site = Path(_ok(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], work))
                .stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(ours)), encoding="utf-8")

    outside = work / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FLOWGAUGE_")}
    return Installed(sdist, wheel, python, venv / "bin" / "flowgauge", outside, env)


def test_sdist_carries_the_configs(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {f"config/{name}" for name in CONFIGS} <= names
    assert "setup.py" in names


def test_wheel_ships_the_configs_identical_and_no_service_package(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = whl.namelist()
        for name in CONFIGS:
            assert whl.read(f"flowgauge/config_files/{name}") == (REPO / "config" / name).read_bytes(), name
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {"flowgauge", "flowgauge-0.1.0.dist-info"}


def test_installed_package_imports_as_flowgauge_only(installed: Installed) -> None:
    code = (
        "import importlib.util, flowgauge; "
        "print(flowgauge.__file__); "
        "print(importlib.util.find_spec('service'))"
    )
    out = _ok(_run([installed.python, "-c", code], installed.outside, installed.env)).stdout.splitlines()
    assert Path(out[0]).is_relative_to(installed.python.parent.parent)  # the venv's copy, not the checkout
    assert out[1] == "None"
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([installed.python, "-c", "import service"], cwd=installed.outside, env=installed.env,
                       capture_output=True, check=True, timeout=60)


def test_built_in_configs_by_name_outside_the_checkout(installed: Installed) -> None:
    demo = _ok(_run([installed.flowgauge, "check-config", "-c", "offline-demo", "--print"],
                    installed.outside, installed.env))
    first, _, printed = demo.stdout.partition("\n")
    assert first == "config OK: 5 venues, 10 symbols"
    assert yaml.safe_load(printed)["venues"]["bybit"]["ws_url"] == "ws://127.0.0.1:9780/v5/public/linear"

    default = _ok(_run([installed.flowgauge, "check-config", "-c", "default"], installed.outside, installed.env))
    assert default.stdout.splitlines() == ["config OK: 5 venues, 11 symbols"]
    no_flag = _ok(_run([installed.flowgauge, "check-config"], installed.outside, installed.env))
    assert no_flag.stdout == default.stdout


def test_partial_file_is_merged_over_the_packaged_defaults(installed: Installed) -> None:
    (installed.outside / "http-only.yaml").write_text("http:\n  port: 9999\n", encoding="utf-8")

    result = _ok(_run([installed.flowgauge, "check-config", "-c", "http-only.yaml", "--print"],
                      installed.outside, installed.env))

    first, _, printed = result.stdout.partition("\n")
    assert first == "config OK: 5 venues, 11 symbols"
    http = yaml.safe_load(printed)["http"]
    assert (http["host"], http["port"]) == ("127.0.0.1", 9999)  # the file's port, the packaged host
    assert http["token"] is None and http["allow_unauthenticated"] is False  # other keys: packaged defaults
