"""The provisioned Grafana dashboard, checked without a Grafana (Debian has no grafana package): its JSON has
the structure Grafana's dashboard model needs (a schema below), every panel sits on the 24-column grid, every
variable it uses is defined, every query is valid PromQL (promtool checks them as recording rules), and the
provisioning files agree with it (compose mounting them: tests/unit/test_compose.py). That every metric name
exists on a live /metrics is tests/integration/test_prometheus_scrape.py's job."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from tests.deploy_files import dashboard, dashboard_queries

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"

_DATASOURCE = {"type": "object", "required": ["type", "uid"], "properties": {"type": {"const": "prometheus"}}}
_TARGET = {
    "type": "object",
    "required": ["refId", "expr"],
    "properties": {"refId": {"type": "string", "pattern": "^[A-Z]$"}, "expr": {"type": "string", "minLength": 1},
                   "datasource": _DATASOURCE, "legendFormat": {"type": "string"}},
}
_GRID = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {k: {"type": "integer", "minimum": 0} for k in ("h", "w", "x", "y")},
}
# The part of Grafana's dashboard model (schemaVersion 39) this dashboard uses.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array", "items": {
            "type": "object", "required": ["name", "type"],
            "properties": {"type": {"enum": ["datasource", "query", "custom", "constant", "interval"]}},
        }}}},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {"enum": ["row", "timeseries", "state-timeline", "table", "heatmap", "stat"]},
                "gridPos": _GRID,
                "targets": {"type": "array", "items": _TARGET},
                "datasource": _DATASOURCE,
            },
            "if": {"properties": {"type": {"const": "row"}}},
            "then": {"properties": {"panels": {"type": "array", "maxItems": 0}}},
            "else": {"required": ["datasource", "targets"], "properties": {"targets": {"minItems": 1}}},
        }},
    },
}


def test_dashboard_matches_the_schema_and_the_grid() -> None:
    doc = dashboard()
    jsonschema.validate(doc, SCHEMA)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        for row in range(g["y"], g["y"] + g["h"]):
            for col in range(g["x"], g["x"] + g["w"]):
                assert (row, col) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((row, col))
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_covers_what_an_operator_needs() -> None:
    text = "\n".join(dashboard_queries())
    for metric in ("flowgauge_depth_imbalance", "flowgauge_ofi", "flowgauge_open_interest", "flowgauge_funding_rate_8h",
                   "flowgauge_ws_connected", "flowgauge_book_state", "flowgauge_event_latency_seconds_bucket",
                   "flowgauge_publish_dropped_total", "flowgauge_shard_info"):
        assert metric in text, metric
    assert "delta(flowgauge_open_interest" in text  # OI changes, not only its level


def test_every_variable_used_is_defined() -> None:
    doc = dashboard()
    defined = {var["name"] for var in doc["templating"]["list"]}
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(doc["panels"]) + json.dumps(doc["templating"])))
    assert used - {"__all"} <= defined, used - defined


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (tools/test.sh installs Debian's prometheus package)"
    rules = []
    for i, expr in enumerate(dashboard_queries()):
        if expr.startswith("label_values("):  # Grafana's own function: check its selector
            expr = expr.removeprefix("label_values(").rsplit(",", 1)[0]
        rules.append({"record": f"dashboard:query_{i}", "expr": re.sub(r"\$\{?\w+\}?", ".*", expr)})
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_points_at_the_dashboard_and_the_datasource() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "flowgauge.yaml").read_text())
    (provider,) = providers["providers"]
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] == source["uid"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/var/lib/grafana/dashboards")
