"""The admin API and the page's door over real HTTP: the bearer token, the loopback rule without one, the session
cookie and CSRF; then the API on real runs (filters, detail, counts, replay one and many), portals, routes and robot
sync, between two sandbox portals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from b24bridge.admin.access import SESSION_COOKIE
from tests.admin.conftest import (
    BROKEN,
    FIXED,
    ROUTE,
    TOKEN,
    altered,
    bearer,
    csrf_of,
    dead_and_delivered,
    login,
)
from tests.bridge_flows.conftest import HOOK_SECRET, BridgeService
from tests.door.test_schema import OPERATIONS
from tests.door.test_schema import _checks as checks_for
from tests.fuzzing import fuzz_operation
from tests.livehttp import LiveServer

FAR = {"X-Forwarded-For": "203.0.113.9"}  # through a proxy on loopback, from elsewhere (uvicorn trusts 127.0.0.1)


def _json_error(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error: str = answer.json()["error"]
    return error


def test_the_api_wants_the_admin_token(serve_admin: Callable[..., LiveServer]) -> None:
    server = serve_admin(admin_token=TOKEN)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for headers in ({}, bearer("not-the-token-but-long-enough-0123"), {"Authorization": f"Basic {TOKEN}"}):
            refused = client.get("/api/runs", headers=headers)
            assert "Authorization: Bearer" in _json_error(refused, 401)
            assert refused.headers["www-authenticate"] == "Bearer"
        assert client.get("/api/runs", headers=bearer()).json() == []
        assert client.get("/api/runs", headers={**bearer(), **FAR}).status_code == 200  # the token opens it anywhere
        # The page's cookie is no key to the API (so the API needs no CSRF defence).
        logged_in = login(server.base_url)
        assert logged_in.get("/api/runs").status_code == 401
        # Every /api refusal is JSON, an unknown path's too; the page's are HTML.
        assert _json_error(client.get("/api/nothing-here", headers=bearer()), 404)
        page = client.get("/admin/nothing-here")
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")


def test_without_a_token_it_is_off_unless_embedded_defaults_on_loopback(
    embedded_dir: Path,
    serve_admin: Callable[..., LiveServer],  # this order: the server stops before its folder goes
) -> None:
    configured = serve_admin()  # a database URL and no admin token: a deployment that forgot the token
    with httpx.Client(base_url=configured.base_url, timeout=30) as client:
        assert "set B24BRIDGE_ADMIN_TOKEN" in _json_error(client.get("/api/runs"), 404)
        page = client.get("/", follow_redirects=True)
        assert page.status_code == 404 and "set B24BRIDGE_ADMIN_TOKEN" in page.text
        assert page.headers["content-type"].startswith("text/html")

    local = serve_admin(database_url=None, data_dir=embedded_dir)  # what `make run` is: open on loopback only
    with httpx.Client(base_url=local.base_url, timeout=30) as client:
        assert client.get("/api/runs/counts").json() == dict.fromkeys(
            ("queued", "running", "succeeded", "failed", "uncertain", "dead"), 0
        )
        assert "only on loopback" in _json_error(client.get("/api/runs", headers=FAR), 403)
        assert "only on loopback" in _json_error(client.get("/api/runs", headers={"Host": "rebound.example"}), 403)
        far_page = client.get("/admin/runs", headers=FAR)
        assert far_page.status_code == 403 and "only on loopback" in far_page.text
        # The page needs no login there, yet its forms carry a CSRF token: another site's page can make the
        # browser post to 127.0.0.1, but cannot read the token.
        runs = client.get("/admin/runs")
        assert runs.status_code == 200 and "Log out" not in runs.text
        assert client.post("/admin/robots/sync", data={}).status_code == 403
        synced = client.post("/admin/robots/sync", data={"csrf": csrf_of(runs.text)})
        assert synced.status_code == 200 and "Robot sync" in synced.text


def test_login_gives_a_strict_http_only_cookie_and_every_post_needs_the_csrf_token(
    serve_admin: Callable[..., LiveServer],
) -> None:
    server = serve_admin(admin_token=TOKEN, public_url="https://b24.example.com")
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        asked = client.get("/admin/runs?status=dead")
        assert (
            asked.status_code == 303
            and asked.headers["location"] == "/admin/login?next=%2Fadmin%2Fruns%3Fstatus%3Ddead"
        )
        wrong = client.post("/admin/login", data={"token": TOKEN[:-1] + "x"})
        assert wrong.status_code == 401 and "That is not the admin token." in wrong.text
        assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
        away = client.post("/admin/login", data={"token": TOKEN, "next": "//evil.example/admin"})
        assert away.headers["location"] == "/admin/runs"
        answer = client.post("/admin/login", data={"token": TOKEN, "next": "/admin/runs?status=dead"})
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/runs?status=dead"
        cookie = answer.headers["set-cookie"].lower()
        assert cookie.startswith(f"{SESSION_COOKIE}=") and "secure" not in cookie  # plain http on loopback
        assert {"httponly", "samesite=strict", "path=/admin", "max-age=43200"} <= set(map(str.strip, cookie.split(";")))
        tls = {"X-Forwarded-Proto": "https"}  # a TLS-terminating proxy on loopback says so
        behind_tls = httpx.post(f"{server.base_url}/admin/login", data={"token": TOKEN}, headers=tls)
        assert "secure" in behind_tls.headers["set-cookie"].lower().split("; ")

        page = client.get("/admin/runs")
        assert page.status_code == 200
        assert page.headers["content-security-policy"].startswith("default-src 'self'; script-src 'self'")
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        csrf = csrf_of(page.text)
        for form in ({}, {"csrf": ""}, {"csrf": altered(csrf)}):
            for path in ("/admin/runs/replay", "/admin/robots/sync", "/admin/logout"):
                refused = client.post(path, data=form)
                assert refused.status_code == 403 and "CSRF token" in refused.text, path
        # A cross-site form cannot carry another session's token either.
        other = login(server.base_url)
        assert (
            client.post("/admin/robots/sync", data={"csrf": csrf_of(other.get("/admin/runs").text)}).status_code == 403
        )
        assert (
            client.post("/admin/runs/replay", data={"run_ids[]": "1"}, headers={"X-CSRF-Token": csrf}).status_code
            == 303
        )
        out = client.post("/admin/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"
        assert "max-age=0" in out.headers["set-cookie"].lower()
        assert client.get("/admin/runs").status_code == 303  # logged out


def test_runs_portals_routes_replay_and_robot_sync(bridge_factory: Callable[..., BridgeService]) -> None:
    bridge = bridge_factory(BROKEN, admin_token=TOKEN)
    bridge.install()
    bridge.wait(lambda: bridge.rows("SELECT 1 FROM robot_registrations"), "the install's robot sync")
    (first_dead, second_dead), [delivered] = dead_and_delivered(bridge, dead=2, delivered=1)
    api = httpx.Client(base_url=bridge.base_url, headers=bearer(), timeout=30)

    def ids(**query: str) -> list[int]:
        answer = api.get("/api/runs", params=query)
        assert answer.status_code == 200, answer.text
        return [run["id"] for run in answer.json()]

    routes = api.get("/api/routes")
    [route] = routes.json()
    assert (route["name"], route["source"]["kind"], route["triggers"]["hook"]) == (ROUTE, "webhook", True)
    source = route["source"]["key"]  # a webhook portal is known by its host
    assert source == route["source"]["address"] == urlsplit(bridge.source.webhook_url).netloc
    assert HOOK_SECRET not in routes.text and "/rest/" not in routes.text  # no secret, no webhook code

    everything = sorted([delivered["id"], second_dead["id"], first_dead["id"]], reverse=True)  # newest first
    assert ids() == ids(route=ROUTE) == ids(portal=source) == ids(kind="bridge") == ids(since="1h") == everything
    assert ids(status="dead") == [second_dead["id"], first_dead["id"]]
    assert ids(status="succeeded") == [delivered["id"]]
    assert ids(route="another") == ids(kind="robot") == ids(portal="acme") == []
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    assert ids(since=tomorrow) == [] and ids(since=tomorrow[:10]) == []
    assert ids(limit="1") == everything[:1]
    assert "status" in _json_error(api.get("/api/runs", params={"status": "lost"}), 400)
    assert _json_error(api.get("/api/runs", params={"since": "yesterday"}), 400).startswith("since: a duration")
    counts = api.get("/api/runs/counts", params={"status": "dead"}).json()  # the counts ignore the status asked
    assert (counts["dead"], counts["succeeded"], counts["queued"]) == (2, 1, 0)

    detail = api.get(f"/api/runs/{delivered['id']}").json()
    assert detail["status"] == "succeeded" and detail["inputs"]["deal_id"] == delivered["inputs"]["deal_id"]
    methods = [call["method"] for call in detail["calls"]]
    assert "crm.deal.get" in methods and all(call["status"] == "ok" for call in detail["calls"])
    dead = api.get(f"/api/runs/{first_dead['id']}").json()
    assert (
        dead["error"] == "STAGE_ID: 'PREPARATION' is not in the map; allowed: EXECUTING" and "event_token" not in dead
    )
    assert _json_error(api.get("/api/runs/999999999"), 404) == "no such run"

    [portal] = api.get("/api/portals").json()
    assert portal["status"] == "active" and portal["tokens"] and portal["token_expires_at"]
    assert portal["robots"] == ["b24bridge_create_contact"]
    assert (portal["limits"]["burst"], portal["limits"]["in_use"] >= 0) == (50, True)
    history = api.get(f"/api/portals/{portal['member_id']}").json()["history"]
    assert "installed" in [event["kind"] for event in history]
    assert _json_error(api.get("/api/portals/nobody"), 404) == "no such portal"
    [synced] = api.post("/api/robots/sync", json={}).json()
    assert (synced["member_id"], synced["unchanged"], synced["error"]) == (
        portal["member_id"],
        [portal["robots"][0]],
        None,
    )
    [missing] = api.post("/api/robots/sync", json={"portal": "nobody"}).json()
    assert missing["member_id"] == "nobody" and "not installed" in missing["error"]

    bridge.stop()
    bridge.start(FIXED, admin_token=TOKEN)  # the operator fixes the route file and restarts
    api.base_url = httpx.URL(bridge.base_url)
    assert api.post(f"/api/runs/{first_dead['id']}/replay").json() == {"replayed": [first_dead["id"]], "not_dead": []}
    many = api.post("/api/runs/replay", json={"status": "dead", "route": ROUTE}).json()
    assert many == {"replayed": [second_dead["id"]], "not_dead": []}
    runs = bridge.settled_runs(3)
    assert [run["status"] for run in runs] == ["succeeded"] * 3
    again = api.post("/api/runs/replay", json={"run_ids": [first_dead["id"], delivered["id"]]}).json()
    assert again == {"replayed": [], "not_dead": sorted([first_dead["id"], delivered["id"]])}
    for body in ({}, {"run_ids": [1], "route": ROUTE}, {"status": "dead", "run_ids": [1]}, {"run_ids": [0]}):
        _json_error(api.post("/api/runs/replay", json=body), 400)


def test_docs_work_offline_and_document_the_admin_api(serve_admin: Callable[..., LiveServer]) -> None:
    server = serve_admin(admin_token=TOKEN)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for page, assets in (
            ("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")),
            ("/redoc", ("redoc.standalone.js",)),
        ):
            html = client.get(page).text
            assert "https://" not in html  # nothing from a CDN (nor Google's fonts)
            for asset in assets:
                assert f'"/docs/assets/{asset}"' in html
                served = client.get(f"/docs/assets/{asset}")
                assert served.status_code == 200 and len(served.content) > 100_000
        assert client.get("/docs/assets/other.js").status_code == 404
        schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "B24BRIDGE_ADMIN_TOKEN (none configured: loopback only)",
    }
    operations = {
        f"{verb.upper()} {path}": spec for path, verbs in schema["paths"].items() for verb, spec in verbs.items()
    }
    admin = {name for name, spec in operations.items() if "admin" in spec.get("tags", [])}
    assert admin == {
        "GET /api/portals",
        "GET /api/portals/{member_id}",
        "GET /api/routes",
        "GET /api/runs",
        "GET /api/runs/counts",
        "GET /api/runs/{run_id}",
        "POST /api/runs/{run_id}/replay",
        "POST /api/runs/replay",
        "POST /api/robots/sync",
    }
    for name in admin:
        assert operations[name]["security"] == [{"HTTPBearer": []}] and {"401", "403"} <= set(
            operations[name]["responses"]
        )
    assert operations["GET /api/runs/{run_id}"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunDetail"
    }
    assert not any(path.startswith("/admin") for path in schema["paths"])  # the page is not part of the API


# The admin API is /api/ less /api/inbound (your systems' door, its own tokens: tests/bridge_flows/test_inbound.py).
ADMIN_OPERATIONS = [op for op in OPERATIONS if op.path.startswith("/api/") and not op.path.startswith("/api/inbound")]
COUNTS = next(operation for operation in ADMIN_OPERATIONS if operation.path == "/api/runs/counts")
# Inputs that once answered 500, sent first every run: the NUL a fresh clone's run found (issue 15).
EXPLICIT = {COUNTS.label: [COUNTS.Case(query={"portal": "E\x00\u00d9\u0099\u00c8\U00103fb6", "status": "queued"})]}


def _fuzz_admin(server: LiveServer, examples: int, *, explore: bool = False) -> None:
    assert len(ADMIN_OPERATIONS) == 9

    def call(case: Any) -> None:
        case.headers = {**(case.headers or {}), **bearer()}
        case.call_and_validate(base_url=server.base_url, checks=checks_for(case.operation))

    for operation in ADMIN_OPERATIONS:
        fuzz_operation(operation, call, examples=examples, explore=explore, explicit=EXPLICIT.get(operation.label, []))


def test_the_admin_api_answers_fuzzed_requests_with_no_5xx_and_json_refusals(
    serve_admin: Callable[..., LiveServer],
) -> None:
    """tests/door's schemathesis run, past the token: every admin operation, positive and negative cases."""
    _fuzz_admin(serve_admin(admin_token=TOKEN), 10)


@pytest.mark.slow
def test_the_admin_api_answers_fuzzed_requests_long(serve_admin: Callable[..., LiveServer]) -> None:
    _fuzz_admin(serve_admin(admin_token=TOKEN), 300, explore=True)
