"""Readers of the deployment files shared by the unit tests that check them and the live-stack test."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "flowgauge.json"


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the Grafana dashboard: panel targets, variable queries and annotations."""
    doc = dashboard()
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"])
    exprs += [a["expr"] for a in doc.get("annotations", {}).get("list", []) if "expr" in a]
    return exprs


# docker-compose.yml's variable interpolation, as compose does it: ${VAR}, ${VAR:-default}, ${VAR:?message}, $$.
_VAR = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?])([^}]*))?\})")


class MissingVariable(Exception):
    """compose refuses to start: a `${VAR:?message}` variable is unset or empty."""


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """`node` with compose's variable interpolation applied to every string in it."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if not isinstance(node, str):
        return node

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if name is None:
            return "$"  # $$ is a literal dollar
        value = env.get(name)
        empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-") and empty:
            return arg
        if op in ("?", ":?") and empty:
            raise MissingVariable(f"{name}: {arg}")
        return value or ""

    return _VAR.sub(one, node)


def example_env() -> dict[str, str]:
    """.env.example's variables, each given a value (as a user's .env would)."""
    env = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^(\w+)=(.*)$", line)
        if match:
            env[match.group(1)] = match.group(2) or f"test-{match.group(1).lower()}"
    return env
