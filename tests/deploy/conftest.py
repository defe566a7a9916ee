"""The deployment files, and what the deployment tests share: the metric families the service really exports,
Compose's file as data and a runner for the tools."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "b24bridge.json"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
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


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
