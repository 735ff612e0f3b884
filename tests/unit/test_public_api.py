"""The public API of `import flowgauge`: what it exports, that it is lazy, and where its version comes from.

Import-time checks run in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pytest

import flowgauge

SERVICE = Path(flowgauge.__file__).resolve().parent.parent
HEAVY = ("asyncio", "websockets", "orjson")


def _fresh(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(SERVICE)!r}); {code}"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return result.stdout.strip()


def test_import_flowgauge_and_its_book_pulls_in_no_asyncio_websockets_or_orjson() -> None:
    code = (
        "import flowgauge, flowgauge.book, json; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    assert json.loads(_fresh(code)) == []


def test_the_client_is_imported_on_first_use() -> None:
    code = (
        "import flowgauge, json; cls = flowgauge.EmbeddedSubscriber; "
        f"print(json.dumps([cls.__module__, [m for m in {HEAVY!r} if m in sys.modules]]))"
    )
    module, loaded = json.loads(_fresh(code))
    assert module == "flowgauge.client"
    assert loaded == list(HEAVY)


def test_every_exported_name_resolves() -> None:
    from flowgauge import client

    for name in flowgauge.__all__:
        assert getattr(flowgauge, name) is not None, name
    for name in ("EmbeddedSubscriber", "ConnectionLost", "SubscriberError", "SubscribeRejected", "Unauthorized"):
        assert name in flowgauge.__all__
        assert getattr(flowgauge, name) is getattr(client, name)
    assert issubclass(flowgauge.ConnectionLost, flowgauge.SubscriberError)
    with pytest.raises(AttributeError, match="no_such_name"):
        flowgauge.no_such_name  # noqa: B018


def test_schema_path_names_the_shipped_json_schemas() -> None:
    for name in ("payload", "status", "trade"):
        path = flowgauge.schema_path(name)
        assert path.parent == flowgauge.SCHEMA_DIR
        schema = json.loads(path.read_text())
        assert schema["$id"].endswith(f"/{name}.v1.json")
    with pytest.raises(ValueError, match="unknown schema 'trades'"):
        flowgauge.schema_path("trades")


def test_version_comes_from_the_installed_metadata() -> None:
    assert flowgauge.__version__ == version("flowgauge")


def test_version_has_a_fallback_when_not_installed(tmp_path: Path) -> None:
    # The package's __init__ alone, away from any installed or in-tree (egg-info) metadata; -S: no site-packages.
    package = tmp_path / "flowgauge"
    package.mkdir()
    shutil.copy(Path(flowgauge.__file__), package / "__init__.py")
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import flowgauge; print(flowgauge.__file__, flowgauge.__version__)"],
        capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path,
    )
    assert result.stdout.split() == [str(package / "__init__.py"), "0+unknown"]


def test_cli_version_prints_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowgauge", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == f"flowgauge {version('flowgauge')}"


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def _third_party_imports(path: Path) -> set[str]:
    """Top-level modules `path` imports that are neither the standard library nor flowgauge."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "flowgauge"}


def test_the_client_extra_lists_exactly_what_the_client_imports() -> None:
    """The client: the subscriber, the SDK over its three transports with typed payloads, `tail`, and the desk-side
    signals (`flowgauge.signals`, standard library only)."""
    package = Path(flowgauge.__file__).parent
    distributions = packages_distributions()
    imported = {
        dist.lower()
        for path in (package / "__init__.py", package / "client.py", package / "tail.py", package / "signals.py",
                     package / "publish" / "topics.py", *sorted((package / "sdk").glob("*.py")))
        for module in _third_party_imports(path)
        for dist in distributions[module]
    }
    pyproject = tomllib.loads((SERVICE.parent / "pyproject.toml").read_text())
    extra = {_requirement_name(r) for r in pyproject["project"]["optional-dependencies"]["client"]}
    assert imported == extra
    base = {_requirement_name(r) for r in pyproject["project"]["dependencies"]}
    assert extra <= base  # the base install (the daemon) can subscribe too


def test_the_client_loads_no_other_flowgauge_module_and_no_daemon_dependency() -> None:
    daemon_only = ("ccxt", "aiohttp", "numpy", "msgspec", "prometheus_client", "yaml", "zstandard", "uvloop")
    code = (
        "import json, flowgauge; from flowgauge import EmbeddedSubscriber; "
        "print(json.dumps([sorted(m for m in sys.modules if m.startswith('flowgauge')), "
        f"[m for m in {daemon_only!r} if m in sys.modules]]))"
    )
    ours, daemon = json.loads(_fresh(code))
    assert ours == ["flowgauge", "flowgauge.client"]
    assert daemon == []


def test_the_sdk_loads_no_daemon_module_and_no_daemon_dependency() -> None:
    daemon_only = ("ccxt", "aiohttp", "numpy", "msgspec", "prometheus_client", "yaml", "zstandard", "uvloop",
                   "nats", "redis", "rich")
    code = (
        "import json, flowgauge; from flowgauge import subscribe; "
        "print(json.dumps([sorted(m for m in sys.modules if m.startswith('flowgauge')), "
        f"[m for m in {daemon_only!r} if m in sys.modules]]))"
    )
    ours, daemon = json.loads(_fresh(code))
    # The transports, msgspec (typed payloads) and rich (tail's table) load only when used.
    assert set(ours) <= {"flowgauge", "flowgauge.client", "flowgauge.publish", "flowgauge.publish.topics",
                         "flowgauge.sdk", "flowgauge.sdk.message", "flowgauge.sdk.patterns",
                         "flowgauge.sdk.subscription", "flowgauge.sdk.transport"}, ours
    assert daemon == []
