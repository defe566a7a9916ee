"""What an operator scrapes: every metric family is there from start-up (API and worker), and one delivery moves
exactly the counters it should. ``promtool check metrics`` (when installed) finds nothing to fix."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.bridge_flows.conftest import move, new_deal, result, webhook_rule
from tests.bridge_flows.processes import BridgeProcesses
from tests.bridge_flows.test_hook import ROUTES
from tests.livehttp import free_socket

# Families by where they are counted: the API takes requests and triggers; the worker runs jobs and calls portals.
# The gauges are sampled from the database, so both processes publish them. (Counters are named without
# "_total", as the exposition parser names their families.)
GAUGES = {
    "b24bridge_runs_in_state",
    "b24bridge_jobs_waiting",
    "b24bridge_jobs_oldest_waiting_seconds",
    "b24bridge_workers_alive",
    "b24bridge_portals",
    "b24bridge_build_info",
    "b24bridge_database_up",
    "b24bridge_gauges_sampled_timestamp_seconds",
}
API = GAUGES | {"b24bridge_http_request_seconds", "b24bridge_inbound"}
WORKER = GAUGES | {
    "b24bridge_runs_finished",
    "b24bridge_runs_dead",
    "b24bridge_run_retries",
    "b24bridge_run_latency_seconds",
    "b24bridge_bitrix_calls",
    "b24bridge_bitrix_requests",
    "b24bridge_bitrix_request_seconds",
    "b24bridge_bitrix_limiter_wait_seconds",
    "b24bridge_redis_unavailable",
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(url: str) -> tuple[str, set[str], Samples]:
    text = httpx.get(url, timeout=10).text
    families = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, families, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def _promtool(text: str) -> None:
    if shutil.which("promtool") is None:
        return
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def test_every_family_from_start_up_and_the_right_counts_after_a_delivery(
    processes_factory: Callable[..., BridgeProcesses],
) -> None:
    sock = free_socket()
    metrics_port = sock.getsockname()[1]
    sock.close()
    bridge = processes_factory(ROUTES, worker_in_process="false", metrics_port=metrics_port)
    bridge.start_worker()
    api_url, worker_url = f"{bridge.base_url}/metrics", f"http://127.0.0.1:{metrics_port}/metrics"

    def up() -> Any:
        try:
            return _scrape(worker_url)
        except httpx.HTTPError:
            return None

    bridge.wait(up, "the worker's /metrics")
    for url, expected in ((api_url, API), (worker_url, WORKER)):
        text, families, samples = _scrape(url)
        assert expected <= families, f"{url} lacks {sorted(expected - families)}"
        _promtool(text)
        assert _value(samples, "b24bridge_build_info") == 1
        assert _value(samples, "b24bridge_runs_in_state") == 0
    _, _, before = _scrape(worker_url)
    assert _value(before, "b24bridge_runs_finished_total") == 0
    assert _value(before, "b24bridge_run_latency_seconds_count") == 0

    webhook_rule(bridge.source, bridge.hook_url("partner-to-acme"))
    deal_id = new_deal(bridge.source, TITLE="Measured")
    move(bridge.source, deal_id)
    [run] = bridge.settled_runs(1)
    assert run["status"] == "succeeded", run["error"]
    [copied] = result(bridge.target, "crm.deal.list", {"select": ["ID"]})
    assert copied

    # Unauthenticated callers choose the path: made-up robot codes and routes are counted, under one label.
    for path in ("/robots/made_up_1", "/robots/made_up_2", "/bridge/hooks/made-up?secret=x&deal=1"):
        call = {"auth[member_id]": "m", "auth[application_token]": "t", "workflow_id": "w", "event_token": "e"}
        refused = httpx.post(bridge.base_url + path, data=call)
        assert refused.status_code in (401, 404), refused.text
    _, _, api = _scrape(api_url)
    assert not [key for key in api if any("made" in value for _, value in key[1])]
    assert _value(api, "b24bridge_inbound_total", route="unknown", outcome="refused") == 3
    hook = {"kind": "hook", "route": "partner-to-acme"}
    assert _value(api, "b24bridge_inbound_total", **hook, outcome="accepted") == 1
    assert _value(api, "b24bridge_inbound_total", **hook) == 1
    assert _value(api, "b24bridge_http_request_seconds_count", route="/bridge/hooks/{route}", status="200") == 1

    _, _, worker = _scrape(worker_url)
    bridge_kind = {"kind": "bridge"}
    assert _value(worker, "b24bridge_runs_finished_total", **bridge_kind, status="succeeded") == 1
    assert _value(worker, "b24bridge_runs_finished_total") == 1
    assert _value(worker, "b24bridge_run_latency_seconds_count", **bridge_kind, status="succeeded") == 1
    assert _value(worker, "b24bridge_runs_dead_total") == 0
    # Every call the run made to the two portals is counted; the run's own log says how many there were.
    calls = bridge.rows("SELECT count(*) AS n FROM run_calls WHERE run_id = %s", run["id"])[0]["n"]
    assert 0 < calls <= _value(worker, "b24bridge_bitrix_calls_total")
    assert _value(worker, "b24bridge_bitrix_requests_total") >= 1

    # The sampled gauges follow the database within their period (5 s): the worker is alive, nothing waits.
    deadline = time.monotonic() + 20
    while True:
        _, _, gauges = _scrape(worker_url)
        if _value(gauges, "b24bridge_workers_alive") == 1 and _value(gauges, "b24bridge_jobs_waiting") == 0:
            break
        assert time.monotonic() < deadline, {k: v for k, v in gauges.items() if "jobs" in k[0] or "workers" in k[0]}
        time.sleep(0.5)
    assert _value(gauges, "b24bridge_runs_in_state", **bridge_kind) == 0
    assert _value(gauges, "b24bridge_database_up") == 1
    assert _value(gauges, "b24bridge_gauges_sampled_timestamp_seconds") > time.time() - 30
