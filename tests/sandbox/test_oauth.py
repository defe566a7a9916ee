"""Conformance: the OAuth 2.0 authorization-code flow and token refresh (REFERENCE 4.1, 4.2).

Driven like a real app would: register and install through the control API, send the "browser" to
``/oauth/authorize/`` without following redirects, read ``Location``, exchange the code server-side.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.livehttp import Receiver
from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import TOKEN_KEYS, install, oauth_token, register, rest


def _app(sandbox: LiveSandbox, receiver: Receiver) -> dict[str, Any]:
    app = register(sandbox, handler_url=receiver.url("/app"), redirect_url=receiver.url("/cb"), scopes=["crm", "user"])
    install(sandbox, app["client_id"])  # a UI app without an install URL is installed at once
    return app


def _authorize(sandbox: LiveSandbox, client_id: str, **extra: str) -> httpx.Response:
    return sandbox.http.get("/oauth/authorize/", params={"client_id": client_id, **extra}, follow_redirects=False)


def _code(sandbox: LiveSandbox, client_id: str, **extra: str) -> str:
    response = _authorize(sandbox, client_id, **extra)
    assert response.status_code == 302, response.text
    return dict(parse_qsl(urlsplit(response.headers["location"]).query))["code"]


def test_authorization_code_flow(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app = _app(sandbox, receiver)
    response = _authorize(sandbox, app["client_id"], state="JJHgsdgfkdaslg7lbadsfg")
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == receiver.url("/cb")
    params = dict(parse_qsl(location.query))
    assert set(params) == {"code", "state", "domain", "member_id", "scope", "server_domain"}
    assert params["state"] == "JJHgsdgfkdaslg7lbadsfg"
    assert params["scope"] == "crm,user"
    assert "scope=crm%2Cuser" in location.query
    assert params["member_id"] == sandbox.info["member_id"]
    assert params["domain"] == params["server_domain"] == urlsplit(sandbox.base_url).netloc

    tokens = oauth_token(sandbox, app, grant_type="authorization_code", code=params["code"])
    assert tokens.status_code == 200
    assert tokens.headers["content-type"].startswith("application/json")
    body = tokens.json()
    assert set(body) == set(TOKEN_KEYS)
    assert body["expires_in"] == 3600
    assert body["user_id"] == 1
    assert body["client_endpoint"] == f"{sandbox.base_url}/rest/"
    assert body["server_endpoint"] == f"{sandbox.base_url}/oauth/rest/"
    profile = rest(sandbox, "profile", body["access_token"])
    assert profile.status_code == 200
    assert profile.json()["result"]["ID"] == "1"
    assert profile.headers["x-bitrix-rest-application"] == app["client_id"]

    again = oauth_token(sandbox, app, grant_type="authorization_code", code=params["code"])
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_authorize_acts_as_the_given_user(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app = _app(sandbox, receiver)
    code = _code(sandbox, app["client_id"], user_id="2")
    body = oauth_token(sandbox, app, grant_type="authorization_code", code=code)
    assert body.json()["user_id"] == 2
    assert rest(sandbox, "user.current", body.json()["access_token"]).json()["result"]["ID"] == "2"


def test_authorize_refuses_unknown_or_uninstalled_app_without_redirect(sandbox: LiveSandbox) -> None:
    pending = register(sandbox, redirect_url="https://app.example.com/cb")
    refusals = {
        "local.nope.00000000": "The application is not installed on this Bitrix24",
        pending["client_id"]: "The application is not installed on this Bitrix24",
        "": "client_id is not specified",
    }
    for client_id, message in refusals.items():
        response = _authorize(sandbox, client_id)
        # The portal shows an error page and never redirects (docs settings/oauth/index.md); its status is the
        # sandbox's choice [inferred].
        assert response.status_code == 400
        assert "location" not in response.headers
        assert response.headers["content-type"].startswith("text/html")
        assert message in response.text


def test_app_without_redirect_url_is_shown_the_code(sandbox: LiveSandbox) -> None:
    app = register(sandbox, scopes=["user"])
    install(sandbox, app["client_id"])
    response = _authorize(sandbox, app["client_id"])
    assert response.status_code == 200
    assert 'id="code"' in response.text


def test_code_expires(sandbox: LiveSandbox, receiver: Receiver) -> None:
    sandbox.control("POST", "/_sandbox/config", {"auth_code_ttl": 1})
    app = _app(sandbox, receiver)
    code = _code(sandbox, app["client_id"])
    sandbox.control("POST", "/_sandbox/clock", {"advance": 1.5})
    response = oauth_token(sandbox, app, grant_type="authorization_code", code=code)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": "Invalid authorization code"}


def test_refresh_rotates_the_refresh_token(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app = _app(sandbox, receiver)
    first = oauth_token(sandbox, app, grant_type="authorization_code", code=_code(sandbox, app["client_id"])).json()
    # POST form works as well as the documented GET.
    refreshed = sandbox.http.post(
        "/oauth/token/",
        data={
            "grant_type": "refresh_token",
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "refresh_token": first["refresh_token"],
        },
    )
    assert refreshed.status_code == 200
    second = refreshed.json()
    assert set(second) == set(TOKEN_KEYS)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    old = oauth_token(sandbox, app, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert old.status_code == 400
    assert old.json()["error"] == "invalid_grant"
    third = oauth_token(sandbox, app, grant_type="refresh_token", refresh_token=second["refresh_token"])
    assert third.status_code == 200


def test_client_and_request_errors(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app = _app(sandbox, receiver)
    code = _code(sandbox, app["client_id"])
    bad_secret = sandbox.http.get(
        "/oauth/token/",
        params={"grant_type": "authorization_code", "client_id": app["client_id"], "client_secret": "x", "code": code},
    )
    assert bad_secret.status_code == 401
    assert bad_secret.json()["error"] == "invalid_client"
    assert set(bad_secret.json()) == {"error", "error_description"}
    missing = oauth_token(sandbox, app, grant_type="authorization_code")
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    no_grant = oauth_token(sandbox, app)
    assert (no_grant.status_code, no_grant.json()["error"]) == (400, "invalid_request")
    unknown_refresh = oauth_token(sandbox, app, grant_type="refresh_token", refresh_token="0" * 32)
    assert (unknown_refresh.status_code, unknown_refresh.json()["error"]) == (400, "invalid_grant")
    # The code was not consumed by the failed client check.
    assert oauth_token(sandbox, app, grant_type="authorization_code", code=code).status_code == 200


def test_expired_access_token_then_refresh(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app = _app(sandbox, receiver)
    body = oauth_token(sandbox, app, grant_type="authorization_code", code=_code(sandbox, app["client_id"])).json()
    sandbox.control("POST", "/_sandbox/tokens/expire", {"access_token": body["access_token"]})
    expired = rest(sandbox, "profile", body["access_token"])
    assert expired.status_code == 401
    assert expired.json() == {"error": "expired_token", "error_description": "The access token provided has expired"}
    fresh = oauth_token(sandbox, app, grant_type="refresh_token", refresh_token=body["refresh_token"]).json()
    assert rest(sandbox, "profile", fresh["access_token"]).status_code == 200


def test_short_access_token_ttl(sandbox: LiveSandbox, receiver: Receiver) -> None:
    sandbox.control("POST", "/_sandbox/config", {"access_token_ttl": 1})
    app = _app(sandbox, receiver)
    body = oauth_token(sandbox, app, grant_type="authorization_code", code=_code(sandbox, app["client_id"])).json()
    assert body["expires_in"] == 1
    assert rest(sandbox, "profile", body["access_token"]).status_code == 200
    sandbox.control("POST", "/_sandbox/clock", {"advance": 1.5})
    assert rest(sandbox, "profile", body["access_token"]).json()["error"] == "expired_token"


# --- the OAuth server's own REST at server_endpoint (oauth.bitrix.info/rest/) -------------------------------


def test_server_endpoint_app_info(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app = _app(sandbox, receiver)
    body = oauth_token(sandbox, app, grant_type="authorization_code", code=_code(sandbox, app["client_id"])).json()
    endpoint = body["server_endpoint"]
    assert endpoint == f"{sandbox.base_url}/oauth/rest/"
    for url in (f"{endpoint}app.info", f"{endpoint}app.info/", f"{endpoint}app.info.json"):
        response = sandbox.http.get(url, params={"auth": body["access_token"]})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        answer = response.json()
        assert set(answer) == {"result", "time"}
        result = answer["result"]
        assert set(result) == {"client_id", "scope", "expires", "install", "user_id"}
        assert result["client_id"] == app["client_id"]
        assert result["scope"] == "crm,user"
        assert result["user_id"] == 1
        expires = datetime.fromisoformat(result["expires"]).timestamp()
        assert abs(expires - body["expires"]) < 1
        assert result["install"] == {
            "installed": True,
            "version": 1,
            "status": "L",
            "scope": "crm,user",
            "domain": urlsplit(sandbox.base_url).netloc,
            "uri": sandbox.base_url,
            "client_endpoint": f"{sandbox.base_url}/rest/",
            "member_id": sandbox.info["member_id"],
            "member_type": "PORTAL",
        }
    # POST with the token in the body works too, like every other REST endpoint.
    posted = sandbox.http.post(f"{endpoint}app.info", data={"auth": body["access_token"]})
    assert posted.json()["result"]["client_id"] == app["client_id"]


def test_server_endpoint_app_info_errors(sandbox: LiveSandbox, receiver: Receiver) -> None:
    app = _app(sandbox, receiver)
    body = oauth_token(sandbox, app, grant_type="authorization_code", code=_code(sandbox, app["client_id"])).json()
    endpoint = "/oauth/rest/"
    bad = sandbox.http.get(f"{endpoint}app.info", params={"auth": "0" * 32})
    assert bad.status_code == 401
    assert bad.json() == {"error": "invalid_token", "error_description": "The access token provided is invalid"}
    missing = sandbox.http.get(f"{endpoint}app.info")
    assert (missing.status_code, missing.json()["error"]) == (401, "NO_AUTH_FOUND")
    unknown = sandbox.http.get(f"{endpoint}crm.contact.list", params={"auth": body["access_token"]})
    assert (unknown.status_code, unknown.json()["error"]) == (404, "ERROR_METHOD_NOT_FOUND")
    sandbox.control("POST", "/_sandbox/tokens/expire", {"access_token": body["access_token"]})
    expired = sandbox.http.get(f"{endpoint}app.info", params={"auth": body["access_token"]})
    assert expired.status_code == 401
    assert expired.json()["error"] == "expired_token"
    # After uninstall the tokens are gone.
    fresh = oauth_token(sandbox, app, grant_type="refresh_token", refresh_token=body["refresh_token"]).json()
    assert sandbox.http.get(f"{endpoint}app.info", params={"auth": fresh["access_token"]}).status_code == 200
    sandbox.control("POST", f"/_sandbox/apps/{app['client_id']}/uninstall", {})
    gone = sandbox.http.get(f"{endpoint}app.info", params={"auth": fresh["access_token"]})
    assert (gone.status_code, gone.json()["error"]) == (401, "invalid_token")
