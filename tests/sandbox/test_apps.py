"""Conformance: installing local applications (REFERENCE 4.3, 4.5; docs installation-finish.md, on-app-*.md).

The install/uninstall calls are awaited by the control API, so the Receiver holds them when it answers.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from tests.livehttp import Receiver
from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import INSTALL_AUTH_KEYS, form, install, installed_app, oauth_token, register, rest

# --- tests -----------------------------------------------------------------------------------------------


def test_register_gives_local_client_id_and_secret(sandbox: LiveSandbox) -> None:
    app = register(sandbox, handler_url="https://app.example.com/", scopes=["crm"])
    assert re.fullmatch(r"local\.[0-9a-f]{14}\.\d{8}", app["client_id"])
    assert re.fullmatch(r"[A-Za-z0-9]{50}", app["client_secret"])
    assert app["installed"] is False
    listed = sandbox.control("GET", "/_sandbox/apps")["apps"]
    assert app["client_id"] in [a["client_id"] for a in listed]


def test_api_only_install_posts_onappinstall_form(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app = register(sandbox, install_url=receiver.url("/install"), api_only=True, scopes=["crm", "user"])
    result = install(sandbox, app["client_id"])
    assert result["app"]["installed"] is True
    assert result["install_call"]["ok"] is True
    assert result["tokens"]["access_token"] == dict(result["install_call"]["payload"]["auth"])["access_token"]
    (request,) = receiver.wait_for(1, path="/install")
    assert request["method"] == "POST"
    assert request["headers"]["content-type"].startswith("application/x-www-form-urlencoded")
    fields = form(request)
    expected = ["event", "event_handler_id", *(f"data[{k}]" for k in ("VERSION", "ACTIVE", "INSTALLED", "LANGUAGE_ID"))]
    expected += ["ts", *(f"auth[{k}]" for k in INSTALL_AUTH_KEYS)]
    assert [k for k, _ in request["form"]] == expected
    assert fields["event"] == "ONAPPINSTALL"
    assert (fields["data[VERSION]"], fields["data[ACTIVE]"], fields["data[INSTALLED]"]) == ("1", "Y", "Y")
    assert fields["auth[scope]"] == "crm,user"
    assert fields["auth[status]"] == "L"
    assert fields["auth[user_id]"] == "1"
    assert fields["auth[expires_in]"] == "3600"
    assert fields["auth[member_id]"] == sandbox.info["member_id"]
    assert fields["auth[client_endpoint]"] == f"{sandbox.base_url}/rest/"
    assert fields["auth[server_endpoint]"] == f"{sandbox.base_url}/oauth/rest/"
    assert re.fullmatch(r"[0-9a-f]{32}", fields["auth[application_token]"])
    info = rest(sandbox, "app.info", fields["auth[access_token]"]).json()["result"]
    assert info["INSTALLED"] is True
    assert info["CODE"] == app["client_id"]


def test_ui_install_opens_frame_and_waits_for_install_finish(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app = register(sandbox, handler_url=receiver.url("/app"), install_url=receiver.url("/setup"))
    result = install(sandbox, app["client_id"])
    assert result["app"]["installed"] is False
    (request,) = receiver.wait_for(1, path="/setup")
    assert request["method"] == "POST"
    assert set(request["query"]) == {"DOMAIN", "PROTOCOL", "LANG", "APP_SID"}
    assert request["query"]["DOMAIN"] == urlsplit(sandbox.base_url).netloc
    assert request["query"]["PROTOCOL"] == "0"  # the sandbox serves plain http
    fields = form(request)
    assert list(fields) == [
        "AUTH_ID",
        "AUTH_EXPIRES",
        "REFRESH_ID",
        "SERVER_ENDPOINT",
        "APPLICATION_TOKEN",
        "APPLICATION_SCOPE",
        "member_id",
        "status",
        "PLACEMENT",
    ]
    assert fields["PLACEMENT"] == "DEFAULT"
    # The install page works with REST before installFinish; app.info tells it the install is unfinished.
    info = rest(sandbox, "app.info", fields["AUTH_ID"])
    assert info.status_code == 200
    assert info.json()["result"]["INSTALLED"] is False
    finished = sandbox.control("POST", f"/_sandbox/apps/{app['client_id']}/install-finish")
    assert finished["installed"] is True
    assert rest(sandbox, "app.info", fields["AUTH_ID"]).json()["result"]["INSTALLED"] is True


def test_reinstall_is_an_update_with_a_new_application_token(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app, first = installed_app(sandbox, receiver)
    token = first["auth[access_token]"]
    assert rest(sandbox, "event.bind", token, event="ONAPPUPDATE", handler=receiver.url("/update")).json()["result"]
    result = install(sandbox, app["client_id"])
    assert result["updated"] is True
    assert result["app"]["version"] == 2
    (update,) = receiver.wait_for(1, path="/update")
    fields = form(update)
    assert fields["event"] == "ONAPPUPDATE"
    assert (fields["data[VERSION]"], fields["data[PREVIOUS_VERSION]"]) == ("2", "1")
    assert "auth[refresh_token]" in fields  # OnAppUpdate carries refresh_token
    second = form(receiver.wait_for(2, path="/install")[-1])
    assert second["data[VERSION]"] == "2"
    assert second["auth[application_token]"] != first["auth[application_token]"]
    assert fields["auth[application_token]"] == second["auth[application_token]"]
    # Handlers are removed on update; the installer of each version rebinds.
    assert rest(sandbox, "event.get", second["auth[access_token]"]).json()["result"] == []


def test_uninstall_posts_onappuninstall_and_revokes_everything(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app, installed = installed_app(sandbox, receiver)
    token = installed["auth[access_token]"]
    rest(sandbox, "event.bind", token, event="onAppUninstall", handler=receiver.url("/bye"))
    result = sandbox.control("POST", f"/_sandbox/apps/{app['client_id']}/uninstall", {"clean": True})
    assert result["app"]["installed"] is False
    assert len(result["calls"]) == 1
    (request,) = receiver.wait_for(1, path="/bye")
    assert request["form"] == [
        ("event", "ONAPPUNINSTALL"),
        ("event_handler_id", request["form"][1][1]),
        ("data[LANGUAGE_ID]", "en"),
        ("data[CLEAN]", "1"),
        ("ts", request["form"][4][1]),
        ("auth[domain]", urlsplit(sandbox.base_url).netloc),
        ("auth[server_endpoint]", f"{sandbox.base_url}/oauth/rest/"),
        ("auth[client_endpoint]", f"{sandbox.base_url}/rest/"),
        ("auth[member_id]", sandbox.info["member_id"]),
        ("auth[application_token]", installed["auth[application_token]"]),
    ]
    after = rest(sandbox, "app.info", token)
    assert after.status_code == 401
    refresh = oauth_token(sandbox, app, grant_type="refresh_token", refresh_token=installed["auth[refresh_token]"])
    assert refresh.status_code == 401
    assert refresh.json()["error"] == "invalid_client"
    # Installing again starts from scratch: no handlers survive.
    install(sandbox, app["client_id"])
    again = form(receiver.wait_for(2, path="/install")[-1])
    assert rest(sandbox, "event.get", again["auth[access_token]"]).json()["result"] == []


def test_uninstall_without_bound_handler_sends_nothing(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app, _ = installed_app(sandbox, receiver)
    result = sandbox.control("POST", f"/_sandbox/apps/{app['client_id']}/uninstall", {"clean": False})
    assert result["calls"] == []
    assert len(receiver.requests) == 1  # only the install callback


def test_only_an_administrator_installs(sandbox: LiveSandbox) -> None:
    app = register(sandbox)
    response = sandbox.http.post(f"/_sandbox/apps/{app['client_id']}/install", json={"user_id": 2})
    assert response.status_code == 403
    unknown = sandbox.http.post("/_sandbox/apps/local.nope.00000000/install", json={})
    assert unknown.status_code == 404
