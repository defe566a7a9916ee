"""The reliability suites' world: two sandbox portals (a partner and its target), a PostgreSQL of the test's own, and
b24bridge as a fleet of processes installed in the partner, with the create-contact robot on one stage, the bridge
robot on another and the bridge's outbound-webhook rule on a third."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from b24bridge.db import EmbeddedPostgres, ensure_database
from b24bridge.robots.definitions.create_contact import CODE as CONTACT_ROBOT
from tests.bridge_flows.conftest import HOOK_SECRET, KEY
from tests.reliability.fleet import ROUTES, Fleet, SandboxCloud, rows, wait
from tests.sandbox.conftest import PortalClient

ROBOT_STAGE, BRIDGE_STAGE, HOOK_STAGE = "PREPARATION", "EXECUTING", "FINAL_INVOICE"
PERSON = {"first_name": "Ann", "last_name": "Lee", "phone": "+15551234567", "email": "ann@example.com"}


@pytest.fixture
def own_postgres() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL only this test uses (outside pytest's private tmp root: it may run as another user)."""
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="b24bridge-reliability-pg-")) / "pg")
    admin = server.start()
    asyncio.run(ensure_database(admin, "b24bridge"))
    try:
        yield server, server.url("b24bridge")
    finally:
        server.stop()


@pytest.fixture
def cloud(request: pytest.FixtureRequest) -> Iterator[SandboxCloud]:
    """The partner and the target, in a sandbox process of their own, limits off (a suite turns them on)."""
    portals = SandboxCloud(2, limits=False)
    try:
        yield portals
    finally:
        portals.stop()


@dataclass
class World:
    source: PortalClient
    target: PortalClient
    fleet: Fleet
    database_url: str
    app: dict[str, Any]

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return rows(self.database_url, sql, *args)

    def deals(self, count: int) -> list[int]:
        ids: list[int] = []
        while len(ids) < count:
            n = min(50, count - len(ids))
            cmd = {f"d{i}": "crm.deal.add?fields[TITLE]=Deal&fields[STAGE_ID]=NEW" for i in range(n)}
            answer = self.source.call("batch", {"halt": 1, "cmd": cmd}).json()
            ids += [int(v) for v in answer["result"]["result"].values()]
        return ids

    def move(self, deal_ids: list[int], stage: str, over_seconds: float) -> None:
        body = {"deal_ids": deal_ids, "stage_id": stage, "over_seconds": over_seconds}
        self.source.control("POST", "/_sandbox/deals/move", body)

    def handler_calls(self, kind: str) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = self.source.control("GET", f"/_sandbox/handler-calls?kind={kind}")["calls"]
        return calls

    def workflows(self, status: str | None = None) -> list[dict[str, Any]]:
        query = f"?status={status}" if status else ""
        found: list[dict[str, Any]] = self.source.control("GET", f"/_sandbox/workflows{query}")["workflows"]
        return found

    def target_deals(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        start = 0
        while True:
            body = self.target.call("crm.deal.list", {"select": ["ID", "ORIGIN_ID"], "start": start}).json()
            found += body["result"]
            if "next" not in body:
                return found
            start = body["next"]


@pytest.fixture
def world_factory(
    cloud: SandboxCloud, own_postgres: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> Iterator[Callable[..., World]]:
    source, target = cloud
    fleets: list[Fleet] = []

    def make(apis: int = 1, workers: int = 0, **settings: Any) -> World:
        _, url = own_postgres
        routes = tmp_path / "routes.yaml"
        routes.write_text(ROUTES)
        fleet = Fleet(tmp_path, {}, apis=apis, workers=workers)
        fleets.append(fleet)
        app = source.control("POST", "/_sandbox/apps", {"name": "b24bridge", "scopes": ["crm", "bizproc", "user"],
                                                         "api_only": True,
                                                         "install_url": f"{fleet.base_url}/install"})  # fmt: skip
        values = {
            "database_url": url,
            "data_dir": str(tmp_path),
            "app_client_id": app["client_id"],
            "app_client_secret": app["client_secret"],
            "oauth_server": source.base_url,
            "encryption_keys": KEY,
            "routes": str(routes),
            "worker_in_process": "true" if workers == 0 else "false",
            "log_format": "json",
            # As many attempts as the default schedule, shorter pauses: a test waits for its runs to end.
            "retry_schedule": "0.5s,1s,2s,3s,5s,5s,5s,5s",
            **{k: str(v) for k, v in settings.items()},
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
        env |= {f"B24BRIDGE_{k.upper()}": v for k, v in values.items()}
        env |= {"TARGET_WEBHOOK": target.webhook_url, "HOOK_SECRET": HOOK_SECRET,
                "SOURCE_DOMAIN": source.info["domain"]}  # fmt: skip
        fleet.env = env
        fleet.start()
        world = World(source, target, fleet, url, app)
        _install(world)
        return world

    try:
        yield make
    finally:
        for fleet in fleets:
            fleet.stop()


def _install(world: World) -> None:
    source, client_id = world.source, world.app["client_id"]
    installed = source.control("POST", f"/_sandbox/apps/{client_id}/install")
    assert (installed.get("install_call") or {}).get("ok"), installed
    wait(lambda: len(world.rows("SELECT 1 FROM robot_registrations")) >= 2, "robots registered", timeout=60)
    rules = [
        {"stage_id": ROBOT_STAGE, "client_id": client_id, "robot_code": CONTACT_ROBOT, "properties": PERSON},
        {"stage_id": BRIDGE_STAGE, "client_id": client_id, "robot_code": "b24bridge_bridge_deal",
         "properties": {"route": "partner-to-acme"}},
        {"type": "webhook", "stage_id": HOOK_STAGE,
         "handler": f"{world.fleet.base_url}/bridge/hooks/partner-to-acme?secret={HOOK_SECRET}&deal={{=Document:ID}}"},
    ]  # fmt: skip
    for rule in rules:
        source.control("POST", "/_sandbox/automation/rules", rule)
