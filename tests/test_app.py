from __future__ import annotations

import time

import httpx

from b24bridge.app import _raw_routes, create_app
from b24bridge.db import Database
from b24bridge.settings import Settings


def _client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b24bridge.test")  # type: ignore[arg-type]


async def test_healthz_and_readyz_with_real_database(database: Database) -> None:
    app = create_app(database.settings, database)
    async with _client(app) as client:
        health = await client.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_readyz_503_when_database_is_unreachable(unused_tcp_port: int) -> None:
    url = f"postgresql://app:hunter2@127.0.0.1:{unused_tcp_port}/b24bridge"
    settings = Settings(database_url=url)
    async with Database(settings) as db:
        app = create_app(settings, db)
        async with _client(app) as client:
            started = time.monotonic()
            ready = await client.get("/readyz")
            elapsed = time.monotonic() - started
            health = await client.get("/healthz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["reason"]
    assert "hunter2" not in ready.text
    assert elapsed < 3.0
    # Liveness does not depend on the database.
    assert health.status_code == 200


async def test_metrics_endpoint(database: Database) -> None:
    app = create_app(database.settings, database)
    async with _client(app) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    # Our own families, not just the process collectors any registry has.
    lines = response.text.splitlines()
    assert "# TYPE b24bridge_bitrix_requests_total counter" in lines
    assert "# TYPE b24bridge_bitrix_limiter_wait_seconds histogram" in lines


def test_the_calls_portals_make_by_the_thousand_are_served_ahead_of_the_framework() -> None:
    """A robot call, a bridge robot call and a bridge hook skip FastAPI's middleware and dependency solving (a
    third of a call's cost in bench/ingest.py; the bridge flood's intake in bench/tenants.py --bridge), and are
    still documented."""
    assert {route.path for route in _raw_routes()} >= {"/robots/{code}", "/bridge/robot", "/bridge/hooks/{route}"}
    schema = create_app(Settings()).openapi()
    body = schema["paths"]["/bridge/robot"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    assert {"workflow_id", "event_token", "auth[application_token]"} <= set(body["schema"]["properties"])
