"""PostgreSQL stopped and started again under a stream of robot calls: every call is answered 200 (those that came
while the database was away were kept in the local spool), the worker comes back on its own, every workflow is
answered exactly once, and the spool is empty afterwards."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from b24bridge import migrations
from b24bridge.db import EmbeddedPostgres, ensure_database
from tests.robots.conftest import PERSON, RobotBridge, add_rule, new_deal, wait_workflow
from tests.sandbox.conftest import LiveSandbox


@pytest.fixture
def own_postgres(embedded_dir: Path) -> Any:
    """A PostgreSQL of this test's own, so it can be stopped without disturbing anyone else."""
    server = EmbeddedPostgres(embedded_dir / "pg")
    admin = server.start()
    try:
        yield server, admin
    finally:
        server.stop()


def _ready(bridge: RobotBridge) -> int:
    try:
        return httpx.get(f"{bridge.base_url}/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.timeout(180)
def test_worker_survives_a_database_outage_and_every_accepted_call_is_answered_once(
    sandbox: LiveSandbox, own_postgres: Any, embedded_dir: Path
) -> None:
    import asyncio

    server, admin = own_postgres
    asyncio.run(ensure_database(admin, "b24bridge"))
    url = server.url("b24bridge")
    migrations.upgrade(url)
    token = "outage-admin-token-0123456789abcdef"
    bridge = RobotBridge(sandbox, url, embedded_dir, api_only=True, settings={"admin_token": token}).start()
    try:
        bridge.install_and_sync()
        add_rule(sandbox, bridge.client_id, PERSON)
        deals = [new_deal(sandbox) for _ in range(60)]
        moved: list[str] = []

        def stream() -> None:  # 5 robot calls a second for 12 s
            for deal_id in deals:
                answer = sandbox.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": "PREPARATION"})
                moved.extend(answer["workflows"])
                time.sleep(0.2)

        streamer = threading.Thread(target=stream)
        streamer.start()
        time.sleep(3)
        server.stop()  # the database goes away mid-stream
        down_at = time.monotonic()
        while time.monotonic() - down_at < 4:
            time.sleep(0.5)
        assert _ready(bridge) == 503
        # A read that needs the database says so, without claiming a write was lost; both invite a retry.
        runs = httpx.get(f"{bridge.base_url}/api/runs", headers={"Authorization": f"Bearer {token}"}, timeout=15)
        assert (runs.status_code, runs.json()) == (503, {"error": "the database is unavailable"})
        assert runs.headers["retry-after"] == "5"
        server.start()
        streamer.join(60)

        deadline = time.monotonic() + 90
        while _ready(bridge) != 200:
            assert time.monotonic() < deadline, "the service did not become ready again"
            time.sleep(0.5)

        calls = sandbox.control("GET", "/_sandbox/handler-calls?kind=robot&settle=1")["calls"]
        accepted = {c["workflow_id"] for c in calls if c["status"] == 200}
        refused = [c for c in calls if c["status"] != 200]
        assert len(calls) == len(moved) == 60
        assert refused == [], [(c["status"], c.get("response")) for c in refused]
        spooled = [c for c in calls if '"spooled":true' in (c.get("response") or "").replace(" ", "")]
        assert spooled, "calls during the outage should have gone to the spool"
        answered_ids = set()
        for workflow_id in accepted:
            workflow = wait_workflow(sandbox, workflow_id, timeout=60)
            assert workflow["status"] == "completed", workflow
            answered_ids.add(int(workflow["return_values"]["contact_id"]))
        # Exactly once: one contact per answered workflow, and every answer names its own contact.
        assert len(answered_ids) == len(accepted)
        assert sandbox.control("GET", "/_sandbox/crm/counts")["counts"]["CONTACT"] == len(accepted)
        # And the run log knows it: every accepted run is answered there too (soon after, for one cut mid-write).
        deadline = time.monotonic() + 30
        while True:
            with psycopg.connect(url) as conn:
                open_runs = conn.execute("SELECT id, status, error FROM runs WHERE answered_at IS NULL").fetchall()
                total = conn.execute("SELECT count(*) FROM runs").fetchone()
            if not open_runs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert open_runs == [] and total == (len(accepted),)
        assert list((embedded_dir / "spool").glob("*.spool")) == []
    finally:
        bridge.stop()
