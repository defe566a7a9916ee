"""The deployment files (Dockerfile, docker-compose.yml, deploy/, the CI workflow) against each other and against the
metrics the service really exports.

Every PromQL expression in the alert rules and the dashboard may name only metric families registered by the
application (and Prometheus' own ``up`` and ``ALERTS``), with the labels those families have. The tools that know
these formats are run where they are installed and skipped, with the reason, where they are not: ``promtool`` (rules,
their unit tests, the Prometheus config) and Compose (``docker compose config``). No Docker engine is needed;
building and running the images is deploy/smoke-test.sh's job (CI runs it on GitHub).
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "b24bridge.json"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"

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
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
ENV = {
    "B24BRIDGE_PUBLIC_URL": "https://b24bridge.example.com",
    "B24BRIDGE_ENCRYPTION_KEYS": "k1:oQjpVLdiELb9gMRXTsWZO9wjGSM14A6ArAPrZpJfNx0",
    "POSTGRES_PASSWORD": "0123456789abcdef",
    "GRAFANA_ADMIN_PASSWORD": "secret",
}


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    labels: frozenset[str]

    def samples(self) -> set[str]:
        return {self.name + suffix for suffix in SUFFIXES.get(self.type, ("",))}


@pytest.fixture(scope="module")
def families() -> dict[str, Family]:
    """Every b24bridge metric family the API and the workers register, from the live registry."""
    from prometheus_client import REGISTRY

    import b24bridge.app
    import b24bridge.gauges  # noqa: F401 -- importing registers the families

    # Label names are not part of the public collect() output for families without children yet; the collectors
    # keep them in ``_labelnames`` (stable across prometheus-client releases). Without it, labels are not checked.
    labels: dict[str, frozenset[str]] = {}
    for name, collector in getattr(REGISTRY, "_names_to_collectors", {}).items():
        if hasattr(collector, "_labelnames"):
            labels[name] = frozenset(collector._labelnames)
    found = {}
    for metric in REGISTRY.collect():
        if metric.name.startswith("b24bridge_"):
            known = labels.get(metric.name, labels.get(metric.name + "_total"))
            found[metric.name] = Family(metric.name, metric.type, known if known is not None else frozenset({"*"}))
    assert len(found) > 15, sorted(found)
    return found


def _samples(families: dict[str, Family]) -> dict[str, Family]:
    return {sample: family for family in families.values() for sample in family.samples()}


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


# --- Compose -----------------------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_compose_has_every_service_with_a_healthcheck() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "api", "worker", "prometheus", "grafana"} <= set(services)
    for name in ("postgres", "redis", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    # api and worker use the image's HEALTHCHECK (it knows both roles); Compose must not switch it off.
    for name in ("api", "worker"):
        assert not services[name].get("healthcheck", {}).get("disable"), name
    assert re.search(r"^HEALTHCHECK .*CMD", DOCKERFILE.read_text(), re.M)
    # Containers start in order of health, not merely of creation.
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy", name


def test_compose_api_and_workers_are_a_scaled_production_deployment() -> None:
    services = _compose()["services"]
    api, worker = services["api"], services["worker"]
    assert api["command"] == ["serve"] and worker["command"] == ["worker"]
    # A fixed name or host port would make `--scale worker=3` fail on the second container.
    assert "container_name" not in worker and "ports" not in worker
    for service in (api, worker):
        env = _env(service)
        assert env["B24BRIDGE_WORKER_IN_PROCESS"] == "false"
        assert env["B24BRIDGE_HOST"] == "0.0.0.0"
        assert env["B24BRIDGE_REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["B24BRIDGE_DATABASE_URL"]
        assert env["B24BRIDGE_ENVIRONMENT"].endswith("production}")
        # Production refuses to start without these: Compose says so first, with a message naming the fix.
        for required in ("B24BRIDGE_ENCRYPTION_KEYS", "B24BRIDGE_PUBLIC_URL"):
            assert re.fullmatch(rf"\$\{{{required}:\?.+\}}", env[required]), required
        assert any(str(volume).endswith(":/etc/b24bridge:ro") for volume in service["volumes"])
    # Published ports are for the host's proxy and operators only.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_every_variable_compose_needs_is_in_env_example() -> None:
    text = COMPOSE.read_text()
    example = (ROOT / ".env.example").read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    optional = set(re.findall(r"\$\{([A-Z0-9_]+):-", text))
    assert {"B24BRIDGE_ENCRYPTION_KEYS", "B24BRIDGE_PUBLIC_URL", "POSTGRES_PASSWORD"} <= required
    for name in required:
        assert re.search(rf"^{name}=", example, re.M), f"{name} is required: .env.example must list it"
    for name in optional:
        assert re.search(rf"^#? ?{name}=", example, re.M), f".env.example should mention {name}"
    assert "keys generate" in example


# --- the image ---------------------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_builds_in_stages_and_runs_as_a_user_with_a_healthcheck() -> None:
    instructions = _instructions()
    stages = [arg for op, arg in instructions if op == "FROM"]
    assert len(stages) >= 2 and stages[0].endswith(" AS build"), stages
    assert "python:3.11" in DOCKERFILE.read_text()
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    exposed = {port for op, arg in instructions if op == "EXPOSE" for port in arg.split()}
    assert {"8000", "9100"} <= exposed
    assert ("ENTRYPOINT", '["b24bridge"]') in instructions
    assert dict(instructions)["CMD"].startswith('["serve"')
    # What the image copies from the context is let through .dockerignore (which excludes everything else).
    let_through = {
        line[1:].strip().removeprefix("./").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for op, arg in instructions:
        if op == "COPY" and "--from" not in arg:
            for source in [word for word in arg.split() if not word.startswith("--")][:-1]:
                assert (ROOT / source).exists(), source
                assert source.removeprefix("./").rstrip("/") in let_through, f"{source} is excluded by .dockerignore"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def _serve(status: int) -> tuple[http.server.HTTPServer, int]:
    handler = type("Handler", (_Answer,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


def _healthcheck(port: int, metrics_port: int) -> subprocess.CompletedProcess[str]:
    env = {"B24BRIDGE_HOST": "0.0.0.0", "B24BRIDGE_PORT": str(port), "B24BRIDGE_METRICS_PORT": str(metrics_port)}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=30)


def test_the_image_healthcheck_knows_the_api_and_the_worker() -> None:
    closed = _free_port()
    api, api_port = _serve(200)
    sick, sick_port = _serve(503)
    worker, worker_port = _serve(200)
    try:
        assert _healthcheck(api_port, closed).returncode == 0  # serve: /healthz answers
        assert _healthcheck(closed, worker_port).returncode == 0  # worker: nothing on 8000, /metrics answers
        refused = _healthcheck(closed, _free_port())
        assert refused.returncode == 1 and "nothing listens" in refused.stdout
        answered = _healthcheck(sick_port, worker_port)  # an API that answers 503 is sick, whatever else runs
        assert answered.returncode == 1 and "HTTP 503" in answered.stdout
    finally:
        for server in (api, sick, worker):
            server.shutdown()
            server.server_close()


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


# --- CI ----------------------------------------------------------------------------------------------------------


def test_the_github_workflow_runs_make_test_with_postgres_and_redis() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    job = workflow["jobs"]["test"]
    assert {"postgres", "redis"} <= set(job["services"])
    assert job["services"]["postgres"]["env"]["POSTGRES_DB"] == "test"
    steps = job["steps"]
    assert any(step.get("with", {}).get("python-version") == "3.11" for step in steps)
    assert any(step.get("run", "").strip() in {"bash .ci/run", "make test"} for step in steps)
    compose_job = workflow["jobs"]["compose"]
    assert any("deploy/smoke-test.sh" in step.get("run", "") for step in compose_job["steps"])


# --- the tools, where installed ------------------------------------------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed: Debian/Ubuntu package `prometheus` (the GitHub workflow installs it)")
    return path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


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


def _compose_command() -> list[str]:
    """Compose v2 as a docker plugin, else a standalone docker-compose (v1 reads this file the same way)."""
    docker = shutil.which("docker")
    if docker is not None and _run([docker, "compose", "version"], ROOT).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    reason = "the docker client has no compose plugin" if docker else "docker is not installed"
    pytest.skip(f"{reason} and there is no docker-compose: cannot run `docker compose config`")


def _project(tmp_path: Path, env: dict[str, str]) -> Path:
    # A copy, so the test never reads or writes the checkout's own .env.
    shutil.copy(COMPOSE, tmp_path / COMPOSE.name)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    (tmp_path / ".env").write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    return tmp_path


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = _compose_command()
    example = (ROOT / ".env.example").read_text()
    filled = re.sub(r"^([A-Z0-9_]+)=$", lambda m: f"{m[1]}={ENV.get(m[1], '')}", example, flags=re.M)
    project = _project(tmp_path, {})
    (project / ".env").write_text(filled)
    result = _run([*command, "config"], project)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert {"postgres", "redis", "api", "worker", "prometheus", "grafana"} <= set(config["services"])
    api_env = config["services"]["api"]["environment"]
    assert (
        api_env["B24BRIDGE_DATABASE_URL"]
        == f"postgresql://b24bridge:{ENV['POSTGRES_PASSWORD']}@postgres:5432/b24bridge"
    )
    assert api_env["B24BRIDGE_PUBLIC_URL"] == ENV["B24BRIDGE_PUBLIC_URL"]

    # With the proxy overlay too (it needs the certificate paths).
    with (project / ".env").open("a") as env:
        env.write("TLS_CERT=/etc/ssl/fullchain.pem\nTLS_KEY=/etc/ssl/privkey.pem\n")
    overlay = _run([*command, "-f", "docker-compose.yml", "-f", "deploy/nginx/compose.proxy.yml", "config"], project)
    assert overlay.returncode == 0, overlay.stderr
    assert yaml.safe_load(overlay.stdout)["services"]["proxy"]["network_mode"] == "service:api"


def test_docker_compose_names_the_missing_secret(tmp_path: Path) -> None:
    command = _compose_command()
    project = _project(tmp_path, {key: value for key, value in ENV.items() if key != "B24BRIDGE_ENCRYPTION_KEYS"})
    result = _run([*command, "config"], project)
    assert result.returncode != 0
    assert "set B24BRIDGE_ENCRYPTION_KEYS in .env" in result.stdout + result.stderr
