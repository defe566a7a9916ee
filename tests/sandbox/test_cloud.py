"""Several portals in one sandbox sharing one OAuth server, like the cloud and oauth.bitrix.info (REFERENCE 4.1-4.5)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.livehttp import Receiver
from tests.sandbox.conftest import CloudPortal, LiveCloud
from tests.sandbox.helpers import TOKEN_KEYS
from tests.sandbox.test_control import _read_banner, stop_cli, wait_serving

CloudFactory = Callable[..., LiveCloud]


def _token(portal: CloudPortal, app: dict[str, Any], **params: str) -> httpx.Response:
    query = {"client_id": app["client_id"], "client_secret": app["client_secret"], **params}
    return portal.http.get("/oauth/token/", params=query)


def _install(portal: CloudPortal, app: dict[str, Any]) -> dict[str, Any]:
    tokens: dict[str, Any] = portal.control("POST", f"/_sandbox/apps/{app['client_id']}/install")["tokens"]
    return tokens


def _code(portal: CloudPortal, client_id: str) -> str:
    response = portal.http.get("/oauth/authorize/", params={"client_id": client_id}, follow_redirects=False)
    assert response.status_code == 302, response.text
    return dict(parse_qsl(urlsplit(response.headers["location"]).query))["code"]


def test_portals_are_separate_worlds(cloud_factory: CloudFactory) -> None:
    first, second = cloud_factory(2)
    assert first.base_url != second.base_url
    assert first.info["domain"] == urlsplit(first.base_url).netloc
    assert first.info["member_id"] != second.info["member_id"]
    assert first.webhook_url != second.webhook_url
    deal = first.call("crm.deal.add", {"fields": {"TITLE": "only here"}}).json()["result"]
    assert first.call("crm.deal.get", {"id": deal}).json()["result"]["TITLE"] == "only here"
    assert second.call("crm.deal.list").json()["total"] == 0
    # One portal's webhook means nothing to another.
    foreign = second.http.post(first.webhook_url.replace(first.base_url, second.base_url) + "user.current")
    assert foreign.status_code == 401 and foreign.json()["error"] == "NO_AUTH_FOUND"
    # Each portal has its own clock and its own reset.
    first.control("POST", "/_sandbox/clock", {"advance": 3600})
    assert second.control("POST", "/_sandbox/clock", {"advance": 0})["offset"] == 0
    second.reset()
    assert first.call("crm.deal.get", {"id": deal}).status_code == 200
    listed = second.control("GET", "/_sandbox/cloud")["portals"]
    assert [(p["base_url"], p["member_id"], p["this"]) for p in listed] == [
        (first.base_url, first.info["member_id"], False),
        (second.base_url, second.info["member_id"], True),
    ]


def test_marketplace_app_installed_in_two_portals(cloud_factory: CloudFactory, receiver: Receiver) -> None:
    cloud = cloud_factory(2)
    first, second = cloud
    app = cloud.marketplace_app(redirect_url=receiver.url("/cb"), scopes=["crm", "user"])
    assert re.fullmatch(r"app\.[0-9a-f]{14}\.\d{8}", app["client_id"]) and app["status"] == "F"
    registered = second.control("GET", f"/_sandbox/apps/{app['client_id']}")
    assert (registered["client_secret"], registered["installed"]) == (app["client_secret"], False)
    one, two = _install(first, app), _install(second, app)
    assert (one["member_id"], two["member_id"]) == (first.info["member_id"], second.info["member_id"])
    # A token works on its own portal only.
    assert first.http.post("/rest/profile", json={"auth": one["access_token"]}).status_code == 200
    elsewhere = second.http.post("/rest/profile", json={"auth": one["access_token"]})
    assert (elsewhere.status_code, elsewhere.json()["error"]) == (401, "invalid_token")
    # Each installation has its own application_token.
    installed = [p.control("GET", f"/_sandbox/apps/{app['client_id']}") for p in (first, second)]
    assert all(a["installed"] for a in installed)
    assert installed[0]["application_token"] != installed[1]["application_token"]


def test_refresh_on_any_port_answers_for_the_token_portal(cloud_factory: CloudFactory, receiver: Receiver) -> None:
    cloud = cloud_factory(3)
    first, second, third = cloud
    app = cloud.marketplace_app(redirect_url=receiver.url("/cb"))
    one, two = _install(first, app), _install(second, app)
    for asked in (first, second, third):  # the third portal has the app registered but not installed
        for tokens, owner in ((one, first), (two, second)):
            response = _token(asked, app, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
            assert response.status_code == 200, response.text
            body = response.json()
            assert list(body) == TOKEN_KEYS
            assert (body["member_id"], body["domain"]) == (owner.info["member_id"], owner.info["domain"])
            assert body["client_endpoint"] == f"{owner.base_url}/rest/"
            tokens["refresh_token"] = body["refresh_token"]
            assert owner.http.post("/rest/user.current", json={"auth": body["access_token"]}).status_code == 200


def test_authorization_code_exchanged_at_another_port(cloud_factory: CloudFactory, receiver: Receiver) -> None:
    cloud = cloud_factory(2)
    first, second = cloud
    app = cloud.marketplace_app(redirect_url=receiver.url("/cb"))
    _install(first, app)
    code = _code(first, app["client_id"])
    body = _token(second, app, grant_type="authorization_code", code=code).json()
    assert body["member_id"] == first.info["member_id"]
    # The code is single-use across the whole OAuth server.
    again = _token(first, app, grant_type="authorization_code", code=code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # The OAuth server's app.info answers for the token's portal on any port.
    info = second.http.get("/oauth/rest/app.info", params={"auth": body["access_token"]}).json()["result"]
    assert info["install"]["member_id"] == first.info["member_id"]
    assert info["install"]["client_endpoint"] == f"{first.base_url}/rest/"


def test_oauth_server_checks_the_app_across_portals(cloud_factory: CloudFactory, receiver: Receiver) -> None:
    cloud = cloud_factory(2)
    first, second = cloud
    app = cloud.marketplace_app(redirect_url=receiver.url("/cb"))
    refused = _token(second, app, grant_type="refresh_token", refresh_token="0" * 32)
    assert refused.json() == {"error": "invalid_client", "error_description": "Application is not installed"}
    tokens = _install(first, app)
    wrong = _token(second, {**app, "client_secret": "x" * 50}, grant_type="refresh_token", refresh_token="0")
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    # Uninstalled from its portal: its refresh token is gone everywhere.
    first.control("POST", f"/_sandbox/apps/{app['client_id']}/uninstall")
    gone = _token(second, app, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert gone.json()["error"] == "invalid_client"


def test_register_validation(cloud_factory: CloudFactory) -> None:
    first, second = cloud_factory(2)
    local = first.control("POST", "/_sandbox/apps", {"name": "Local"})
    refused = second.http.post(f"/_sandbox/apps/{local['client_id']}/register")
    assert refused.status_code == 400 and "belongs to one portal" in refused.json()["error"]
    assert second.http.post("/_sandbox/apps/app.nope.00000000/register").status_code == 404
    market = first.control("POST", "/_sandbox/apps", {"marketplace": True})
    assert first.http.post(f"/_sandbox/apps/{market['client_id']}/register").status_code == 409
    # A local app's keys work on its own portal only: the other portal does not know the client.
    first.control("POST", f"/_sandbox/apps/{local['client_id']}/install")
    # Asked at the other portal's port, the one OAuth server still knows the client (installed on portal 1).
    other = _token(second, local, grant_type="refresh_token", refresh_token="0" * 32)
    assert other.json() == {"error": "invalid_grant", "error_description": "Invalid refresh token"}


def _consecutive_free_ports() -> int:
    """A free port whose successor is free too (server.run serves port .. port + N - 1)."""
    for _ in range(50):
        with socket.socket() as low:
            low.bind(("127.0.0.1", 0))
            port: int = low.getsockname()[1]
            with socket.socket() as high:
                try:
                    high.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")


def test_server_run_with_several_portals(tmp_path: Path) -> None:
    port = _consecutive_free_ports()
    state = tmp_path / "world.json"
    code = (
        "from pathlib import Path; from b24bridge.sandbox.server import run; "
        f"run(port={port}, portals=2, limits=False, state_path=Path({str(state)!r}))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = _read_banner(process, f"http://127.0.0.1:{port + 1}/_sandbox/")
        banner = "\n".join(lines)
        assert "2 portals sharing one OAuth server" in banner
        hooks = re.findall(r"incoming webhook : (\S+)", banner)
        assert [urlsplit(h).port for h in hooks] == [port, port + 1]
        for hook in hooks:
            assert wait_serving(hook + "user.current").json()["result"]["ID"] == "1"
        members = {httpx.get(f"http://127.0.0.1:{p}/_sandbox/").json()["member_id"] for p in (port, port + 1)}
        assert len(members) == 2
    finally:
        assert stop_cli(process) == 0
    # Each portal saved its own world.
    assert state.exists() and (tmp_path / "world.2.json").exists()
