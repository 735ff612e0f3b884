"""A real Prometheus scrapes the daemon's /metrics, and a real Alertmanager delivers its alert to a webhook.

One stack for the module (started once, ~5 s): simulator (Bybit) -> daemon with an HTTP token -> a Prometheus
server (Debian's `prometheus`, compose's deploy/prometheus/prometheus.yml with local paths) scraping it every
second with `authorization: credentials_file`, plus a second target on a closed loopback port that stands for a
dead daemon -> Prometheus evaluates the real `FlowgaugeDown` rule of deploy/prometheus/rules.yaml with `for: 0s`
-> an Alertmanager (Debian's `prometheus-alertmanager`, deploy/alertmanager/alertmanager.yml with
`group_wait: 0s` and the webhook URL pointed here) -> a local aiohttp webhook. Both servers
are installed by tools/test.sh. Every wait is on a condition, bounded. The same daemon's /metrics must carry
every metric the alert rules and the Grafana dashboard query.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from tests.conftest import BYBIT_RECORDING
from tests.deploy_files import dashboard, dashboard_queries
from tests.procs import flowgauge, free_port, http_get, process, wait_for, write_config

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "scrape-token-for-the-test"

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class Stack:
    http_port: int
    prom_port: int
    dead_target: str  # a scrape target nothing listens on: a daemon that is down
    live_target: str
    alerts: list[dict[str, Any]] = field(default_factory=list)  # alerts the webhook received, in order
    last_alerts: list[tuple[str, str | None, str]] = field(default_factory=list)  # active ones last seen


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(f"{names[0]} is required (tools/test.sh installs it from Debian's packages)")


def _test_rules(path: Path) -> Path:
    """deploy/prometheus/rules.yaml's FlowgaugeDown, unchanged but for `for: 0s` (fires on the first evaluation)."""
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())
    (down,) = [rule for group in rules["groups"] for rule in group["rules"] if rule.get("alert") == "FlowgaugeDown"]
    down["for"] = "0s"
    path.write_text(yaml.safe_dump({"groups": [{"name": "flowgauge-test", "rules": [down]}]}))
    return path


def _prometheus_config(tmp: Path, stack: Stack, am_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml (compose's) with what only a container has replaced: the token file's path,
    the targets and the Alertmanager address; 1 s intervals and the test rule."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"})
    # The test rule, and every shipped rule as it is (evaluated against live series: see the rules health test).
    config["rule_files"] = [str(_test_rules(tmp / "rules.yaml")), str(ROOT / "deploy" / "prometheus" / "rules.yaml")]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{am_port}"]}]
    (job,) = config["scrape_configs"]
    job["authorization"]["credentials_file"] = str(tmp / "token")
    job["static_configs"] = [{"targets": [stack.live_target, stack.dead_target]}]
    return config


def _alertmanager_config(hook_port: int) -> dict[str, Any]:
    """deploy/alertmanager/alertmanager.yml (routes, receiver, inhibitions as shipped) delivering to the local
    webhook, with no waiting: group_wait 0s everywhere, group_interval 1s."""
    config = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    for route in [config["route"], *config["route"].get("routes", [])]:
        route.update({"group_wait": "0s", "group_interval": "1s"})
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"http://127.0.0.1:{hook_port}/alerts"
    return config


async def _webhook(received: list[dict[str, Any]]) -> tuple[web.AppRunner, int]:
    """An aiohttp server on a free loopback port recording every alert Alertmanager posts to /alerts."""

    async def alerts(request: web.Request) -> web.Response:
        received.extend((await request.json())["alerts"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/alerts", alerts)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    prometheus = _binary("prometheus")
    alertmanager = _binary("prometheus-alertmanager", "alertmanager")
    tmp = tmp_path_factory.mktemp("observability")
    sim_port, bus_port, http_port, prom_port, am_port = (free_port() for _ in range(5))
    stack = Stack(http_port, prom_port, dead_target=f"127.0.0.1:{free_port()}", live_target=f"127.0.0.1:{http_port}")
    runner, hook_port = await _webhook(stack.alerts)

    config = write_config(tmp / "cfg.yaml", sim_port, bus_port, http_port)
    (tmp / "token").write_text(TOKEN + "\n")
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(_prometheus_config(tmp, stack, am_port)))
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(_alertmanager_config(hook_port)))
    sim_args = ["simulate", "--venue", "bybit", "--recording", str(BYBIT_RECORDING), "--port", str(sim_port)]
    try:
        with ExitStack() as procs:
            procs.enter_context(flowgauge(sim_args, tmp / "sim.log"))
            procs.enter_context(
                flowgauge(["run", "-c", str(config)], tmp / "daemon.log", env={"FLOWGAUGE_HTTP__TOKEN": TOKEN})
            )
            procs.enter_context(process([
                alertmanager, f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'am'}",
                f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
            ], tmp / "alertmanager.log"))
            # Prometheus starts only once both answer: a live daemon not yet listening at its first scrape would
            # be `up == 0` and raise the for: 0s FlowgaugeDown for the live target too, and an alert Prometheus
            # fails to hand to an Alertmanager not yet up is sent again only after its 1 min resend delay.
            await wait_for(lambda: _answers(http_port, "/healthz"), "the daemon's /healthz", timeout_s=60)
            await wait_for(lambda: _answers(am_port, "/-/ready"), "Alertmanager ready", timeout_s=60)
            procs.enter_context(process([
                prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ], tmp / "prometheus.log"))
            yield stack
    finally:
        await runner.cleanup()


async def _answers(port: int, path: str) -> bool:
    code, _ = await http_get(port, path)
    return code == 200


async def _query(port: int, promql: str) -> list[dict]:
    code, body = await http_get(port, f"/api/v1/query?query={quote(promql)}")
    if code != 200:
        return []
    doc = orjson.loads(body)
    return doc["data"]["result"] if doc.get("status") == "success" else []


async def live_metrics(port: int, token: str = TOKEN) -> str:
    """The daemon's /metrics text, fetched with the bearer token."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"},
                    timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        assert response.status == 200, response.status
        return await response.text()


async def test_prometheus_scrapes_the_signal_gauges(stack: Stack) -> None:
    prom_port = stack.prom_port

    async def scraped_up() -> bool:
        result = await _query(prom_port, f'up{{job="flowgauge",instance="{stack.live_target}"}}')
        return bool(result) and result[0]["value"][1] == "1"

    # Up with the token read from credentials_file (the daemon answers 401 without it).
    await wait_for(scraped_up, "Prometheus to scrape the daemon successfully", timeout_s=60)

    async def depth_series() -> list[dict]:
        return await _query(prom_port, 'flowgauge_depth_imbalance{venue="bybit",levels="10"}')

    series = await wait_for(depth_series, "depth imbalance series in Prometheus", timeout_s=60)
    symbols = {s["metric"]["symbol"] for s in series}
    assert symbols == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    assert all(-1 <= float(s["value"][1]) <= 1 for s in series)
    oi = await wait_for(
        lambda: _query(prom_port, 'flowgauge_open_interest{venue="bybit",symbol="BTC/USDT:USDT"}'),
        "open interest in Prometheus",
    )
    assert 20_000 < float(oi[0]["value"][1]) < 40_000  # one-sided
    states = await _query(prom_port, 'flowgauge_book_state{venue="bybit"}')
    assert {float(s["value"][1]) for s in states} <= {0.0, 1.0} and states
    assert {s["metric"]["state"] for s in states} == {"VALID", "SYNCING", "INVALID"}


async def test_flowgauge_down_reaches_the_webhook_through_alertmanager(stack: Stack) -> None:
    """The dead target's FlowgaugeDown goes Prometheus -> Alertmanager -> webhook; the live daemon raises none."""

    def delivered() -> list[dict[str, Any]]:
        return [a for a in stack.alerts if a["labels"].get("alertname") == "FlowgaugeDown"]

    (alert, *_) = await wait_for(delivered, "FlowgaugeDown delivered to the webhook", timeout_s=30)
    assert alert["status"] == "firing"
    assert alert["labels"]["instance"] == stack.dead_target
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["job"] == "flowgauge"
    assert alert["annotations"]["summary"] == f"flowgauge {stack.dead_target}: scrape failing for 1 minute"
    # The live daemon is scraped (up 1), so no alert names it.
    assert not [a for a in delivered() if a["labels"]["instance"] == stack.live_target]
    assert (await _query(stack.prom_port, f'up{{instance="{stack.live_target}"}}'))[0]["value"][1] == "1"


async def test_every_metric_the_alerts_and_the_dashboard_use_is_on_live_metrics(stack: Stack) -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())
    used = {m for g in rules["groups"] for r in g["rules"] for m in re.findall(r"\bflowgauge_\w+", r["expr"])}

    async def names() -> set[str]:
        text = await live_metrics(stack.http_port)
        found = set(re.findall(r"^(flowgauge_\w+)", text, re.M))
        # The clock offset appears with the venue's first frames, OI with its first poll.
        return found if {"flowgauge_venue_clock_offset_seconds", "flowgauge_open_interest"} <= found else set()

    exported = await wait_for(names, "clock offset and open interest on /metrics")
    assert used and used <= exported, used - exported
    # The Grafana dashboard's queries too (deploy/grafana/dashboards/flowgauge.json).
    queried = {m for expr in dashboard_queries() for m in re.findall(r"\bflowgauge_\w+", expr)}
    assert len(queried) >= 20 and queried <= exported, queried - exported


async def test_every_dashboard_query_runs_on_the_live_prometheus(stack: Stack) -> None:
    """Each query of the Grafana dashboard (its variables as "all"), run by the real Prometheus against the live
    daemon's series: PromQL that parses but fails at evaluation (a many-to-many join, say) fails here."""
    await wait_for(lambda: _query(stack.prom_port, "flowgauge_open_interest"), "open interest in Prometheus")
    # rate() needs two scrapes of a series.
    await wait_for(lambda: _query(stack.prom_port, "rate(flowgauge_ws_messages_total[1m]) > 0"), "a frame rate")
    empty = []
    for expr in dashboard_queries():
        if expr.startswith("label_values("):
            expr = expr.removeprefix("label_values(").rsplit(",", 1)[0]
        promql = re.sub(r"\$\{?\w+\}?", ".*", expr)
        code, body = await http_get(stack.prom_port, f"/api/v1/query?query={quote(promql)}")
        doc = orjson.loads(body)
        assert code == 200 and doc["status"] == "success", (promql, body[:300])
        if not doc["data"]["result"]:
            empty.append(promql)
    # Every panel shows data on a stack a few seconds old, but the 5-minute OI change (needs 5 minutes of history)
    # and, while every book is VALID, the list of books that are not.
    assert [q for q in empty if "offset 5m" in q], empty
    assert not [q for q in empty if "offset 5m" not in q and 'state="VALID"} == 0' not in q], empty


async def test_every_shipped_rule_evaluates_cleanly_on_live_series(stack: Stack) -> None:
    """deploy/prometheus/rules.yaml loaded as shipped: after an evaluation every rule reports health ok (a query
    that parses but fails on real series, e.g. a join matching many-to-many, would report err)."""
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())
    shipped = {r["alert"] for g in rules["groups"] for r in g["rules"]}

    async def evaluated() -> list[dict[str, Any]]:
        code, body = await http_get(stack.prom_port, "/api/v1/rules")
        groups = orjson.loads(body)["data"]["groups"] if code == 200 else []
        found = [r for g in groups if g["name"] == "flowgauge" for r in g["rules"]]
        done = found and all(not r["lastEvaluation"].startswith("0001") for r in found)
        return found if done else []

    found = await wait_for(evaluated, "every shipped rule evaluated once")
    assert {r["name"] for r in found} == shipped
    assert all(r["health"] == "ok" for r in found), [(r["name"], r.get("lastError")) for r in found]


async def test_every_rule_selects_live_series_by_their_real_label_names(stack: Stack) -> None:
    """promtool's rule tests run on series written by hand; here each selector of the shipped rules, label matchers
    included, must match the live daemon's series in the real Prometheus, and every label a rule groups, joins or
    annotates by must be on them (a misspelt label would leave an alert silent, or its summary blank, forever)."""
    await wait_for(lambda: _query(stack.prom_port, "flowgauge_open_interest"), "open interest in Prometheus")
    await wait_for(lambda: _query(stack.prom_port, "flowgauge_venue_clock_offset_seconds"), "clock offsets")
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        selectors = re.findall(r"\b((?:flowgauge_\w+|up)(?:\{[^}]*\})?)", rule["expr"])
        assert selectors, rule["alert"]
        labels: set[str] = set()
        for selector in selectors:
            series = await _query(stack.prom_port, selector)
            assert series, (rule["alert"], selector)
            labels.update(key for s in series for key in s["metric"])
        text = rule["expr"] + " ".join(rule.get("annotations", {}).values())
        used = {name.strip() for group in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", text) for name in group.split(",")}
        used |= set(re.findall(r"\$labels\.(\w+)", text))
        assert used <= labels, (rule["alert"], used - labels)


async def test_a_healthy_daemon_raises_no_alert(stack: Stack) -> None:
    """Once its books are VALID, the live daemon's series set off none of the shipped rules (pending or firing):
    only the dead target's FlowgaugeDown is active. The receive -> publish SLO is left out while pending: a loaded
    test machine may well be over 2.5 ms for a moment, and the alert waits 10 minutes for that reason."""

    async def quiet() -> bool:
        if not await _query(stack.prom_port, 'min(flowgauge_book_state{state="VALID"}) == 1'):
            return False  # books still syncing: FlowgaugeBookNotValid may rightly be pending
        code, body = await http_get(stack.prom_port, "/api/v1/alerts")
        active = orjson.loads(body)["data"]["alerts"] if code == 200 else [{}]
        stack.last_alerts = [
            (a["labels"]["alertname"], a["labels"].get("instance"), a["state"]) for a in active
            if not (a["labels"]["alertname"] == "FlowgaugeDown" and a["labels"]["instance"] == stack.dead_target)
            and not (a["labels"]["alertname"] == "FlowgaugeEventLagOverSLO" and a["state"] == "pending")
        ]
        return not stack.last_alerts

    try:
        await wait_for(quiet, "no alert but the dead target's", timeout_s=30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {stack.last_alerts}") from None


async def test_the_dashboard_shows_a_daemon_that_is_down(stack: Stack) -> None:
    """The "Scrape up" panel must list the dead target at 0: a daemon that is down exports no flowgauge_shard_info,
    so a join on it alone would drop exactly the row an operator looks for."""
    (panel,) = [p for p in dashboard()["panels"] if p["title"] == "Scrape up"]
    (target,) = panel["targets"]
    expected = {stack.live_target: "1", stack.dead_target: "0"}

    async def both() -> dict[str, str]:
        result = await _query(stack.prom_port, target["expr"])
        seen = {s["metric"]["instance"]: s["value"][1] for s in result}
        return seen if set(seen) == set(expected) else {}

    seen = await wait_for(both, "both targets in the Scrape up panel")
    assert seen == expected
