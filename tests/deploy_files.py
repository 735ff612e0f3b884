"""Readers of the deployment files shared by the unit tests that check them and the live-stack test."""

from __future__ import annotations

import json
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
