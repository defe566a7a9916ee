"""Two sandbox portals sharing one OAuth server (source and target) and b24bridge between them, all over real HTTP."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from b24bridge.app import create_app
from b24bridge.portals import crypto
from b24bridge.settings import Settings
from tests.livehttp import LiveServer, serve, serve_many
from tests.sandbox.conftest import CloudPortal, LiveCloud

KEY = "k1:" + crypto.new_key()
HOOK_SECRET = "hook-secret-0123456789abcdef"
STAGE = "PREPARATION"


@pytest.fixture(scope="module")
def bridge_db(make_migrated_database: Callable[[], str]) -> str:
    return make_migrated_database()


@pytest.fixture(scope="module")
def cloud() -> Iterator[LiveCloud]:
    yield from serve(LiveCloud(2, limits_enabled=False))


TABLES = ("run_calls", "runs", "bridge_links", "bridge_dedupe", "robot_registrations", "portal_events", "portals",
          "procrastinate_jobs")  # fmt: skip


@pytest.fixture
def portals(cloud: LiveCloud, bridge_db: str) -> tuple[CloudPortal, CloudPortal]:
    for portal in cloud:
        portal.reset()
    with psycopg.connect(bridge_db, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"DELETE FROM {table}")
    source, target = cloud
    return source, target


class BridgeService:
    """b24bridge (API and in-process worker) on a route file written for the test, between two sandbox portals."""

    def __init__(self, source: CloudPortal, target: CloudPortal, database_url: str, data_dir: Path) -> None:
        self.source, self.target = source, target
        self.database_url = database_url
        self.data_dir = data_dir
        self.server: LiveServer | None = None
        self.app: dict[str, Any] = {}

    def start(self, routes: str, **settings: Any) -> BridgeService:
        path = self.data_dir / "routes.yaml"
        path.write_text(textwrap.dedent(routes))
        os.environ["SOURCE_WEBHOOK"] = self.source.webhook_url
        os.environ["TARGET_WEBHOOK"] = self.target.webhook_url
        os.environ["HOOK_SECRET"] = HOOK_SECRET
        os.environ["SOURCE_DOMAIN"] = self.source.info["domain"]
        os.environ["TARGET_DOMAIN"] = self.target.info["domain"]

        def factory(port: int) -> Any:
            base = f"http://127.0.0.1:{port}"
            self.app = self.source.control(
                "POST",
                "/_sandbox/apps",
                {"name": "b24bridge", "scopes": ["crm", "bizproc", "user"], "install_url": f"{base}/install",
                 "api_only": True},
            )  # fmt: skip
            values: dict[str, Any] = {
                "database_url": self.database_url,
                "data_dir": self.data_dir,
                "app_client_id": self.app["client_id"],
                "app_client_secret": self.app["client_secret"],
                "oauth_server": self.source.base_url,
                "public_url": base,
                "encryption_keys": KEY,
                "routes": path,
                "retry_schedule": "0.2s,0.5s,1s,2s",
                **settings,
            }
            return create_app(Settings(**values))

        self.server = LiveServer(factory)
        return self

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def install(self) -> None:
        """Install b24bridge (its application) in the source, and wait for the post-install steps."""
        self.source.control("POST", f"/_sandbox/apps/{self.app['client_id']}/install")
        self.wait(lambda: self.rows("SELECT 1 FROM portals"), "the install")

    def hook_url(self, route: str, **query: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"{self.base_url}/bridge/hooks/{route}?secret={HOOK_SECRET}&deal={{=Document:ID}}{extra}"

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def settled_runs(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The bridge runs once ``count`` of them have ended (succeeded or dead, and answered if a workflow waits)."""

        def ended() -> list[dict[str, Any]]:
            found = self.rows("SELECT * FROM runs WHERE kind = 'bridge' ORDER BY id")
            # A workflow's run has ended once its answer is recorded too: the workflow may hear it a moment before.
            done = [
                r
                for r in found
                if r["status"] in ("succeeded", "dead") and (r["workflow_id"] is None or r["answered_at"] is not None)
            ]
            return found if len(done) >= count and len(done) == len(found) else []

        runs: list[dict[str, Any]] = self.wait(ended, f"{count} bridge runs to end", timeout)
        return runs


@pytest.fixture
def bridge_factory(
    portals: tuple[CloudPortal, CloudPortal], bridge_db: str, tmp_path: Path
) -> Iterator[Callable[..., BridgeService]]:
    source, target = portals
    yield from serve_many(
        lambda routes, **settings: BridgeService(source, target, bridge_db, tmp_path).start(routes, **settings)
    )


def new_deal(portal: CloudPortal, **fields: Any) -> int:
    answer = portal.call("crm.deal.add", {"fields": {"TITLE": "Order", "STAGE_ID": "NEW", **fields}})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["result"])


def new_process(portal: CloudPortal, title: str) -> tuple[int, int]:
    """A smart process with clients enabled: its entityTypeId and its default pipeline's id."""
    fields = {
        "title": title,
        "isCategoriesEnabled": "Y",
        "isStagesEnabled": "Y",
        "isClientEnabled": "Y",
        "isLinkWithProductsEnabled": "Y",
        "isAutomationEnabled": "Y",
    }
    made = result(portal, "crm.type.add", {"fields": fields})["type"]
    entity_type_id = int(made["entityTypeId"])
    pipelines = result(portal, "crm.category.list", {"entityTypeId": entity_type_id})["categories"]
    default = next(p for p in pipelines if p.get("isDefault") in ("Y", True))
    return entity_type_id, int(default["id"])


def result(portal: CloudPortal, method: str, params: dict[str, Any] | None = None) -> Any:
    answer = portal.call(method, params or {})
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


def move(portal: CloudPortal, deal_id: int, stage: str = STAGE) -> None:
    portal.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": stage})


def webhook_rule(portal: CloudPortal, url: str, stage: str = STAGE) -> dict[str, Any]:
    rule: dict[str, Any] = portal.control(
        "POST", "/_sandbox/automation/rules", {"type": "webhook", "stage_id": stage, "handler": url}
    )
    return rule


def robot_rule(bridge: BridgeService, route: str, stage: str = STAGE, **extra: Any) -> dict[str, Any]:
    """The bridge robot placed on ``stage`` in the source, naming ``route``."""
    rule: dict[str, Any] = bridge.source.control(
        "POST",
        "/_sandbox/automation/rules",
        {
            "stage_id": stage,
            "client_id": bridge.app["client_id"],
            "robot_code": "b24bridge_bridge_deal",
            "properties": {"route": route},
            **extra,
        },
    )
    return rule


def wait_workflow(portal: CloudPortal, workflow_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        workflow: dict[str, Any] = portal.control("GET", f"/_sandbox/workflows/{workflow_id}")
        if workflow["status"] != "running" or time.monotonic() > deadline:
            return workflow
        time.sleep(0.05)


@pytest.fixture
def processes_factory(
    portals: tuple[CloudPortal, CloudPortal], bridge_db: str, tmp_path: Path
) -> Iterator[Callable[..., Any]]:
    """b24bridge as separate processes (``serve`` and killable ``worker`` processes) on a route file."""
    from tests.bridge_flows.processes import BridgeProcesses

    source, target = portals
    yield from serve_many(
        lambda routes, **settings: BridgeProcesses(source, target, bridge_db, tmp_path).start(routes, **settings)
    )
