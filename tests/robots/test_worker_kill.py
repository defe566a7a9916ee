"""A worker killed (kill -9) in the middle of a run: another worker finishes the run, exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from b24bridge.robots.definitions.create_contact import ORIGINATOR_ID
from tests.portals.conftest import KEY, rows
from tests.robots.conftest import PERSON, RobotBridge, add_rule, contacts, move, new_deal, wait_run, wait_workflow


class Workers:
    def __init__(self, bridge: RobotBridge) -> None:
        self.bridge = bridge
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        b = self.bridge
        env = {
            **os.environ,
            "B24BRIDGE_DATABASE_URL": b.database_url,
            "B24BRIDGE_DATA_DIR": str(b.data_dir),
            "B24BRIDGE_APP_CLIENT_ID": b.client_id,
            "B24BRIDGE_APP_CLIENT_SECRET": str(b.app["client_secret"]),
            "B24BRIDGE_OAUTH_SERVER": b.sandbox.base_url,
            "B24BRIDGE_PUBLIC_URL": b.base_url,
            "B24BRIDGE_ENCRYPTION_KEYS": KEY,
            "B24BRIDGE_LOG_FORMAT": "json",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "b24bridge.cli", "worker", "--concurrency", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.fixture
def workers(bridge_factory: Any) -> Iterator[Workers]:
    bridge = bridge_factory(worker_in_process=False)
    found = Workers(bridge)
    yield found
    found.stop()


def _wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(120)
def test_worker_killed_mid_run_is_finished_once_by_another(workers: Workers) -> None:
    bridge = workers.bridge
    sandbox = bridge.sandbox
    # The install hook runs in the API process: no worker needed for that.
    bridge.install_and_sync()
    add_rule(sandbox, bridge.client_id, PERSON, timeout_duration=300)
    # The run's one request (crm.contact.add and bizproc.event.send in a batch) is held for 3 s and then dropped
    # before it runs: the worker dies while it is in flight. (The write-happened-but-answer-lost case is
    # test_uncertain_add_is_found_not_repeated.)
    fault = {"latency_ms": 3000, "drop_rate": 1.0, "drop_phase": "before", "methods": ["batch"]}
    sandbox.control("POST", "/_sandbox/faults", fault)

    first = workers.start()
    workflow_id = move(sandbox, new_deal(sandbox))
    _wait(
        lambda: rows(
            bridge.database_url, "SELECT 1 FROM runs WHERE workflow_id = %s AND status = 'running'", workflow_id
        ),
        30,
        "the first worker to start the run",
    )
    _wait(
        lambda: sandbox.control("GET", "/_sandbox/faults")["injected"].get("drop_before"),
        30,
        "the run's request to reach the portal",
    )
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    sandbox.control("DELETE", "/_sandbox/faults")
    assert rows(bridge.database_url, "SELECT status FROM runs")[0]["status"] == "running"

    workers.start()
    run = wait_run(bridge.database_url, workflow_id, timeout=60)
    assert run["status"] == "succeeded", run
    assert run["attempts"] == 2
    found = contacts(sandbox, ORIGINATOR_ID=ORIGINATOR_ID)
    assert len(found) == 1
    assert run["outcome"]["values"]["contact_id"] == int(found[0]["ID"])
    wf = wait_workflow(sandbox, workflow_id)
    assert wf["status"] == "completed" and int(wf["return_values"]["contact_id"]) == int(found[0]["ID"])
    methods = [r["method"] for r in rows(bridge.database_url, "SELECT method FROM run_calls ORDER BY id")]
    # The killed attempt recorded nothing (it died in the call); the second, knowing it is a repeat, first looked
    # for a contact of this run, then created it and answered (one request).
    assert methods == ["crm.contact.list", "crm.contact.add", "bizproc.event.send"]


def test_uncertain_add_is_found_not_repeated(bridge_factory: Any) -> None:
    bridge = bridge_factory()
    sandbox = bridge.sandbox
    bridge.install_and_sync()
    add_rule(sandbox, bridge.client_id, PERSON, timeout_duration=300)
    # The portal creates the contact and takes the answer, then the connection drops: an uncertain write.
    sandbox.control("POST", "/_sandbox/faults", {"drop_rate": 1.0, "drop_phase": "after", "methods": ["batch"]})
    workflow_id = move(sandbox, new_deal(sandbox))
    _wait(
        lambda: rows(bridge.database_url, "SELECT 1 FROM run_calls WHERE status = 'uncertain'"),
        30,
        "an uncertain crm.contact.add",
    )
    sandbox.control("DELETE", "/_sandbox/faults")
    run = wait_run(bridge.database_url, workflow_id, timeout=60)
    assert run["status"] == "succeeded" and run["attempts"] == 2, run
    found = contacts(sandbox, ORIGINATOR_ID=ORIGINATOR_ID)
    assert len(found) == 1
    assert run["outcome"]["values"]["contact_id"] == int(found[0]["ID"])
    calls = rows(bridge.database_url, "SELECT method, status FROM run_calls ORDER BY id")
    # The second attempt found the contact by ORIGIN_ID and answered again (a second send is ignored).
    assert calls == [
        {"method": "crm.contact.add", "status": "uncertain"},
        {"method": "bizproc.event.send", "status": "uncertain"},
        {"method": "crm.contact.list", "status": "ok"},
        {"method": "bizproc.event.send", "status": "ok"},
    ]
