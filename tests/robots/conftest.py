"""A running sandbox portal and a running b24bridge (API + in-process worker), both real HTTP on loopback.

Builds on the portals tests' ``Bridge`` (install through the sandbox, settings pointing at its OAuth server).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from b24bridge.robots.definitions.create_contact import CODE
from tests.livehttp import serve, serve_many
from tests.portals.conftest import Bridge, fresh, rows
from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import issue_token

STAGE = "PREPARATION"
PERSON = {
    "last_name": "Lee",
    "first_name": "Ann",
    "middle_name": "Marie",
    "phone": "+1 (555) 123-4567",
    "email": "ann.lee@example.com",
}


class RobotBridge(Bridge):
    """b24bridge with its worker in process unless told otherwise."""

    def __init__(
        self, *args: Any, worker_in_process: bool = True, settings: dict[str, Any] | None = None, **app: Any
    ) -> None:
        super().__init__(*args, **app)
        self.worker_in_process = worker_in_process
        self.overrides = settings or {}

    def settings(self, port: int | None = None, **overrides: Any) -> Any:
        return super().settings(port, **{"worker_in_process": self.worker_in_process, **self.overrides, **overrides})

    @property
    def client_id(self) -> str:
        return str(self.app["client_id"])

    def install_and_sync(self, timeout: float = 15) -> None:
        """Install, then wait until the install hook has registered the robot."""
        self.install()
        deadline = time.monotonic() + timeout
        while CODE not in robot_codes(self.sandbox, self.client_id):
            if time.monotonic() > deadline:
                raise AssertionError("the robot was not registered after install")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def robots_db(make_migrated_database: Callable[[], str]) -> str:
    return make_migrated_database()


@pytest.fixture(scope="module")
def _robots_sandbox() -> Iterator[LiveSandbox]:
    yield from serve(LiveSandbox(limits_enabled=False))


@pytest.fixture
def sandbox(_robots_sandbox: LiveSandbox, robots_db: str) -> LiveSandbox:
    tables = ("run_calls", "runs", "robot_registrations", "portal_events", "portals", "procrastinate_jobs")
    return fresh(_robots_sandbox, robots_db, tables)


@pytest.fixture
def bridge_factory(sandbox: LiveSandbox, robots_db: str, tmp_path: Path) -> Iterator[Callable[..., RobotBridge]]:
    yield from serve_many(lambda **options: RobotBridge(sandbox, robots_db, tmp_path, api_only=True, **options).start())


@pytest.fixture
def bridge(bridge_factory: Callable[..., RobotBridge]) -> RobotBridge:
    return bridge_factory()


# --- talking to the sandbox -----------------------------------------------------------------------------------


def robot_codes(sandbox: LiveSandbox, client_id: str) -> list[str]:
    answer = httpx.post(
        f"{sandbox.base_url}/rest/bizproc.robot.list", json={"auth": issue_token(sandbox, client_id)}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["result"])


def add_rule(sandbox: LiveSandbox, client_id: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    rule: dict[str, Any] = sandbox.control(
        "POST",
        "/_sandbox/automation/rules",
        {"stage_id": STAGE, "client_id": client_id, "robot_code": CODE, "properties": properties, **extra},
    )
    return rule


def new_deal(sandbox: LiveSandbox, title: str = "Order") -> int:
    answer = sandbox.call("crm.deal.add", {"fields": {"TITLE": title, "STAGE_ID": "NEW"}})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["result"])


def move(sandbox: LiveSandbox, deal_id: int) -> str:
    """Move the deal into the robot's stage; the id of the workflow it started."""
    moved = sandbox.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": STAGE})
    [workflow_id] = moved["workflows"]
    return str(workflow_id)


def wait_workflow(sandbox: LiveSandbox, workflow_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        wf: dict[str, Any] = sandbox.control("GET", f"/_sandbox/workflows/{workflow_id}")
        if wf["status"] != "running" or time.monotonic() > deadline:
            return wf
        time.sleep(0.05)


def contacts(sandbox: LiveSandbox, **filters: Any) -> list[dict[str, Any]]:
    answer = sandbox.call(
        "crm.contact.list",
        {"filter": filters, "select": ["ID", "NAME", "LAST_NAME", "SECOND_NAME", "PHONE", "EMAIL", "ORIGIN_ID"]},
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["result"])


def wait_run(database_url: str, workflow_id: str, timeout: float = 20) -> dict[str, Any]:
    """The run of ``workflow_id`` once it has been answered (or the last state seen at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        found = rows(database_url, "SELECT * FROM runs WHERE workflow_id = %s", workflow_id)
        if (found and found[0]["answered_at"] is not None) or time.monotonic() > deadline:
            assert found, f"no run for workflow {workflow_id}"
            return found[0]
        time.sleep(0.05)
