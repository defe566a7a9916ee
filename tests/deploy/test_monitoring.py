"""The alert rules, the Prometheus config and the Grafana dashboard against the metrics the service really exports.

Every PromQL expression in the alert rules and the dashboard may name only metric families registered by the
application (and Prometheus' own ``up`` and ``ALERTS``), with the labels those families have. ``promtool`` (rules,
their unit tests, the Prometheus config) is run where it is installed and skipped, with the reason, where it is not.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DASHBOARD, GRAFANA, PROMETHEUS, ROOT, Family, _compose, _env, _run, _samples

# What issue 11 asks the alerts to cover, by the rule that covers it.
REQUIRED_ALERTS = {
    "B24BridgeRunsDied": "a run died",
    "B24BridgeDeadRunsWaiting": "dead runs wait",
    "B24BridgeQueueStalled": "queue age",
    "B24BridgePortalAuthLost": "auth lost",
    "B24BridgeLimitErrors": "limit errors",
    "B24BridgeNoWorkerHeartbeat": "no worker heartbeat",
    "B24BridgeMetricsAbsent": "no metrics at all",
    "B24BridgeApiDown": "API down",
}
# Prometheus' own series the rules and the dashboard may use besides b24bridge's.
PROMETHEUS_SERIES = {"up", "ALERTS"}
# Labels Prometheus adds to every scraped series (target labels) or to alerts.
TARGET_LABELS = {"job", "instance"}


# --- what the queries say ------------------------------------------------------------------------------------------

METRIC = re.compile(r"\b(b24bridge_[a-z0-9_]+)")
SELECTOR = re.compile(r"\b(b24bridge_[a-z0-9_]+|up|ALERTS)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    legend: str = ""


def _queries() -> list[Query]:
    queries = [Query(f"alert {rule['alert']}", str(rule["expr"])) for rule in _rules()]
    dashboard = _dashboard()
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            queries.append(Query(f"panel {panel['title']!r}", target["expr"], target.get("legendFormat", "")))
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") == "query":
            queries.append(Query(f"variable {variable['name']}", variable["definition"]))
    return queries


QUERIES = _queries()


@pytest.mark.parametrize("query", QUERIES, ids=[f"{q.where}: {q.expr[:60]}" for q in QUERIES])
def test_every_query_names_exported_metrics_and_their_labels(query: Query, families: dict[str, Family]) -> None:
    samples = _samples(families)
    names = set(METRIC.findall(query.expr))
    unknown = sorted(name for name in names if name not in samples)
    assert not unknown, f"{query.where}: {query.expr}\nnot exported: {unknown}; exported families: {sorted(families)}"
    if not names and not any(re.search(rf"\b{series}\b", query.expr) for series in PROMETHEUS_SERIES):
        pytest.fail(f"{query.where} names no metric at all: {query.expr}")

    # Labels in selectors belong to that metric; labels grouped by or shown in a legend belong to one of the
    # query's metrics (a typo like `by (outcom)` gives an empty or merged series, not an error, in Prometheus).
    available = set(TARGET_LABELS)
    for name, matchers in SELECTOR.findall(query.expr):
        family = samples.get(name)
        allowed = set(TARGET_LABELS) | {"__name__"}
        if family is not None:
            allowed |= family.labels | ({"le"} if name.endswith("_bucket") else set())
        elif name == "ALERTS":
            allowed |= {"alertname", "alertstate", "severity"}
        if family is None or "*" not in family.labels:
            bad = sorted(set(MATCHER.findall(matchers)) - allowed)
            assert not bad, f"{query.where}: {name} has no label {bad} (it has {sorted(allowed)})"
    for name in names:
        family = samples[name]
        available |= family.labels | ({"le"} if name.endswith("_bucket") else set())
    if "ALERTS" in query.expr:
        available |= {"alertname", "alertstate", "severity"}
    if "*" in available:
        return
    grouped = {label.strip() for clause in GROUPING.findall(query.expr) for label in clause.split(",") if label.strip()}
    assert grouped <= available, f"{query.where}: grouping by {sorted(grouped - available)}, not a label here"
    shown = set(LEGEND.findall(query.legend))
    assert shown <= available, f"{query.where}: legend shows {sorted(shown - available)}, not a label here"


# --- alerts ------------------------------------------------------------------------------------------------------


def test_the_alerts_the_issue_asks_for_exist_with_what_on_call_needs() -> None:
    rules = {rule["alert"]: rule for rule in _rules()}
    missing = {name: what for name, what in REQUIRED_ALERTS.items() if name not in rules}
    assert not missing, f"alerts missing: {missing}"
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and len(annotations["description"]) > 80, name
    # What to run is named where it matters.
    assert "runs list --status dead" in rules["B24BridgeRunsDied"]["annotations"]["description"]
    assert "runs replay" in rules["B24BridgeRunsDied"]["annotations"]["description"]
    assert "reinstall" in rules["B24BridgePortalAuthLost"]["annotations"]["description"]
    assert "absent(" in rules["B24BridgeMetricsAbsent"]["expr"]
    # The limit errors are the two codes of Bitrix24's limits.
    for code in ("QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"):
        assert code in rules["B24BridgeLimitErrors"]["expr"]


def test_alerts_on_database_gauges_do_not_count_each_process_twice() -> None:
    # Every process samples the same database values: a sum over instances would multiply them by the process count.
    import b24bridge.gauges as gauges

    sampled = {gauge._name for gauge in vars(gauges).values() if type(gauge).__name__ == "Gauge"}
    for rule in _rules():
        for name in set(METRIC.findall(str(rule["expr"]))) & sampled:
            taken = rf"\b(?:max|min)\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(\s*{name}"
            assert re.search(taken, rule["expr"]) or f"absent({name}" in rule["expr"], (
                f"{rule['alert']}: take the max of {name} across processes"
            )


def test_alert_jobs_are_the_scrape_jobs() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    used = {job for rule in _rules() for job in re.findall(r'job=~?"([^"]+)"', str(rule["expr"]))}
    for job in used:
        assert job in jobs or any(re.fullmatch(job, name) for name in jobs), f"alerts use job {job!r}; jobs: {jobs}"


def test_prometheus_finds_the_api_and_every_scaled_worker_by_their_service_names() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    services = _compose()["services"]
    targets: dict[str, tuple[str, int]] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A"
            for name in sd["names"]:
                targets[name] = (job["job_name"], sd["port"])
    assert targets["api"][1] == 8000 and "api" in services
    # DNS discovery, not a fixed list: `--scale worker=N` adds N addresses under one name.
    assert targets["worker"][1] == 9100 and "worker" in services


# --- Grafana -----------------------------------------------------------------------------------------------------


# Families deliberately left off the dashboard, each with the reason. Empty: every family has a panel.
NOT_ON_DASHBOARD: dict[str, str] = {}


def test_the_dashboard_shows_every_exported_family(families: dict[str, Family]) -> None:
    dashboard = _dashboard()
    exprs = " ".join(target["expr"] for panel in _panels(dashboard) for target in panel.get("targets", []))
    samples = _samples(families)
    shown = {samples[name].name for name in METRIC.findall(exprs) if name in samples}
    missing = sorted(set(families) - shown - set(NOT_ON_DASHBOARD))
    assert not missing, (
        f"not on the dashboard: {missing}: add a panel to {DASHBOARD.relative_to(ROOT)}, "
        "or name the family in NOT_ON_DASHBOARD with the reason"
    )


def test_the_dashboard_is_well_formed_and_provisioned() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "b24bridge"
    panels = list(_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        columns, lines = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        covered = {(x, y) for x in columns for y in lines}
        assert not covered & cells, f"{panel['title']!r} overlaps another panel"
        cells |= covered
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["current"]["value"] == source["uid"]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "b24bridge.yml").read_text())
    [provider] = providers["providers"]
    grafana = _compose()["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert _env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].startswith(provider["options"]["path"])


# --- promtool, where installed -------------------------------------------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed: Debian/Ubuntu package `prometheus` (the GitHub workflow installs it)")
    return path


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    promtool = _promtool()
    checked = _run([promtool, "check", "rules", "alerts.yml"], PROMETHEUS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _run([promtool, "test", "rules", "alerts.test.yml"], PROMETHEUS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_checks_the_prometheus_config() -> None:
    promtool = _promtool()
    checked = _run([promtool, "check", "config", "prometheus.yml"], PROMETHEUS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
