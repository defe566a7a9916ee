"""Every workflow that waits gets its answer: through long outages, and otherwise as a visible dead run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.portals.conftest import KEY, rows
from tests.robots.conftest import PERSON, RobotBridge, add_rule, move, new_deal, wait_workflow

OUTAGE = {"error_503_rate": 1.0}  # every REST request answered by the gateway's 503 page: the portal is unreachable


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _run(bridge: RobotBridge, workflow_id: str) -> dict[str, Any]:
    """The run of the workflow, or an empty dict while the robot call is still on its way."""
    found = rows(bridge.database_url, "SELECT * FROM runs WHERE workflow_id = %s", workflow_id)
    return found[0] if found else {}


def _dead_total(bridge: RobotBridge) -> float:
    for line in httpx.get(f"{bridge.base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith('b24bridge_runs_dead_total{kind="robot"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("b24bridge_runs_dead_total is not exported")


@pytest.mark.timeout(120)
def test_a_portal_down_longer_than_many_attempts_still_gets_its_answer(
    bridge_factory: Callable[..., RobotBridge],
) -> None:
    # Twelve short pauses stand in for the default day-long schedule: the point is that the run outlives more
    # attempts than the job engine used to allow (8) and is answered once the portal is back. One try a request:
    # the client's own tries (a few seconds an attempt) would only make the test slower.
    bridge = bridge_factory(settings={"retry_schedule": ",".join(["0.2s"] * 12), "bitrix_retry_attempts": "1"})
    sandbox = bridge.sandbox
    bridge.install_and_sync()
    add_rule(sandbox, bridge.client_id, PERSON)
    deal_id = new_deal(sandbox)
    sandbox.control("POST", "/_sandbox/faults", OUTAGE)
    workflow_id = move(sandbox, deal_id)
    _wait(lambda: _run(bridge, workflow_id).get("attempts", 0) >= 9, 90, "nine failed attempts")
    assert _run(bridge, workflow_id)["answered_at"] is None
    sandbox.control("DELETE", "/_sandbox/faults")
    workflow = wait_workflow(sandbox, workflow_id, timeout=30)
    assert workflow["status"] == "completed", workflow
    run = _wait(lambda: _run(bridge, workflow_id)["answered_at"] and _run(bridge, workflow_id), 10, "the answer")
    # Eight whole attempts failed before the portal came back (the job engine used to give up after eight).
    assert run["status"] == "succeeded" and run["attempts"] >= 9
    assert int(workflow["return_values"]["contact_id"]) == run["outcome"]["values"]["contact_id"]


def _cli(bridge: RobotBridge, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
    env.update(
        {
            "B24BRIDGE_DATABASE_URL": bridge.database_url,
            "B24BRIDGE_DATA_DIR": str(bridge.data_dir),
            "B24BRIDGE_APP_CLIENT_ID": bridge.client_id,
            "B24BRIDGE_APP_CLIENT_SECRET": str(bridge.app["client_secret"]),
            "B24BRIDGE_OAUTH_SERVER": bridge.sandbox.base_url,
            "B24BRIDGE_PUBLIC_URL": bridge.base_url,
            "B24BRIDGE_ENCRYPTION_KEYS": KEY,
            "COLUMNS": "250",
        }
    )
    command = [sys.executable, "-m", "b24bridge.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(120)
def test_an_answer_that_cannot_be_delivered_ends_dead_and_can_be_answered_again(
    bridge_factory: Callable[..., RobotBridge],
) -> None:
    bridge = bridge_factory(settings={"retry_schedule": "0.2s,0.2s", "bitrix_retry_attempts": "1"})
    sandbox = bridge.sandbox
    bridge.install_and_sync()
    add_rule(sandbox, bridge.client_id, PERSON)
    dead_before = _dead_total(bridge)
    deal_id = new_deal(sandbox)
    sandbox.control("POST", "/_sandbox/faults", OUTAGE)
    workflow_id = move(sandbox, deal_id)
    run = _wait(lambda: _run(bridge, workflow_id).get("status") == "dead" and _run(bridge, workflow_id), 60, "dead")
    assert run["attempts"] == 3 and run["answered_at"] is None
    assert "QUERY_LIMIT_EXCEEDED" not in run["error"] and "503" in run["error"], run["error"]
    # One try a request (B24BRIDGE_BITRIX_RETRY_ATTEMPTS=1; the client's default is 4): each attempt's write, and the
    # last attempt's answer telling the workflow of the failure. Every pause was the retry schedule's.
    assert sandbox.control("GET", "/_sandbox/faults")["injected"] == {"error_503": run["attempts"] + 1}
    assert _dead_total(bridge) == dead_before + 1

    listed = _cli(bridge, "runs", "list", "--status", "dead")
    assert listed.returncode == 0, listed.stderr
    assert str(run["id"]) in listed.stdout and "dead" in listed.stdout and "503" in listed.stdout
    as_json = _cli(bridge, "runs", "list", "--status", "dead", "--kind", "robot", "--json")
    assert [(r["id"], r["status"], r["kind"]) for r in json.loads(as_json.stdout)] == [(run["id"], "dead", "robot")]
    assert json.loads(_cli(bridge, "runs", "list", "--kind", "bridge", "--json").stdout) == []
    shown = json.loads(_cli(bridge, "runs", "show", str(run["id"]), "--json").stdout)
    assert shown["id"] == run["id"] and shown["calls"] and all("503" in str(c) for c in shown["calls"][-1:])

    # The portal is back: the operator answers the workflow again; it gets the robot's outcome once.
    sandbox.control("DELETE", "/_sandbox/faults")
    again = _cli(bridge, "runs", "answer", str(run["id"]), "999999")
    assert again.returncode == 1 and f"queued again: {run['id']}" in again.stdout
    assert "not dead (left alone): 999999" in again.stderr
    workflow = wait_workflow(sandbox, workflow_id, timeout=30)
    assert workflow["status"] == "completed", workflow
    answered = _wait(lambda: _run(bridge, workflow_id)["answered_at"] and _run(bridge, workflow_id), 20, "answer")
    # The work had failed (the portal was down), so the workflow hears the error, not a made-up success.
    assert answered["status"] == "failed" and not workflow["return_values"].get("contact_id")
    [answer] = [line for line in workflow["log"] if line["source"] == "bizproc.event.send"]
    assert answer["message"].startswith("b24bridge: ") and "503" in answer["message"]
