"""Helpers the sandbox tests share: the documented auth key lists, installing apps, tokens, REST calls."""

from __future__ import annotations

from typing import Any

import httpx

from b24bridge.sandbox import tokens
from tests.livehttp import Receiver
from tests.sandbox.conftest import LiveSandbox

# The keys of an OAuth token answer, in the order Bitrix24 sends them (REFERENCE 4.2).
TOKEN_KEYS = [
    "access_token",
    "expires",
    "expires_in",
    "scope",
    "domain",
    "server_endpoint",
    "status",
    "client_endpoint",
    "member_id",
    "user_id",
    "refresh_token",
]
# ``auth[...]`` of an install or robot call: the token answer plus the application token.
INSTALL_AUTH_KEYS = [*TOKEN_KEYS, "application_token"]
# ``auth[...]`` of an event delivery: as an install, but without a refresh token.
EVENT_AUTH_KEYS = [k for k in INSTALL_AUTH_KEYS if k != "refresh_token"]


def assert_insufficient_scope(response: httpx.Response) -> None:
    """A method outside the caller's scopes: 403 ``insufficient_scope`` (REFERENCE 1.5), not a missing method."""
    assert response.status_code == 403, response.text
    assert response.json() == {
        "error": "insufficient_scope",
        "error_description": "The request requires higher privileges than provided by the webhook token",
    }


def register(sandbox: LiveSandbox, **fields: Any) -> dict[str, Any]:
    app: dict[str, Any] = sandbox.control("POST", "/_sandbox/apps", {"name": "Test app", **fields})
    return app


def install(sandbox: LiveSandbox, client_id: str, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = sandbox.control("POST", f"/_sandbox/apps/{client_id}/install", body)
    return result


def form(request: dict[str, Any]) -> dict[str, str]:
    fields: dict[str, str] = dict(request["form"])
    return fields


def installed_app(
    sandbox: LiveSandbox, receiver: Receiver, scopes: list[str] | None = None, **fields: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """An API-only app installed by the admin: (app, the ONAPPINSTALL form it received)."""
    app = register(
        sandbox, install_url=receiver.url("/install"), api_only=True, scopes=scopes or ["crm", "user"], **fields
    )
    install(sandbox, app["client_id"])
    got = receiver.wait_for(1, path="/install")
    return app, form(got[-1])


def rest(sandbox: LiveSandbox, method: str, access_token: str, **params: Any) -> httpx.Response:
    return sandbox.http.post(f"/rest/{method}", json={**params, "auth": access_token})


def oauth_token(sandbox: LiveSandbox, app: dict[str, Any], **params: str) -> httpx.Response:
    """``GET /oauth/token/`` with the application's credentials and ``params`` (grant_type, code, refresh_token)."""
    query = {"client_id": app["client_id"], "client_secret": app["client_secret"], **params}
    return sandbox.http.get("/oauth/token/", params=query)


def issue_token(sandbox: LiveSandbox, client_id: str, user_id: int = 1) -> str:
    """A fresh access token of the application for ``user_id`` (what an admin's browser would hold).

    Minted in-process with the same ``tokens.issue`` the install/OAuth flows use, so the tests do not depend on
    the OAuth server's flow.
    """
    app = sandbox.portal.world.apps[client_id]
    return tokens.issue(sandbox.portal, app, user_id).access.token


def app_token(sandbox: LiveSandbox, user_id: int = 1) -> str:
    """Install the pre-registered app through the control API, then take a token of ``user_id`` for it."""
    install(sandbox, sandbox.client_id)
    assert sandbox.portal.world.apps[sandbox.client_id].installed
    return issue_token(sandbox, sandbox.client_id, user_id)


def ok(response: httpx.Response) -> Any:
    """The ``result`` of a successful REST answer."""
    assert response.status_code == 200, response.text
    return response.json()["result"]


def error(response: httpx.Response) -> dict[str, Any]:
    """The body of a 400 REST answer (``error``, ``error_description``)."""
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    return body
