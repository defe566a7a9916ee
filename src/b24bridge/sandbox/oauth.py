"""The Bitrix24 OAuth server: ``/oauth/authorize/`` (portal side), ``/oauth/token/`` and the OAuth server's own REST
``/oauth/rest/app.info`` (oauth.bitrix.info side).

On the real platform the first lives on the portal and the others on ``oauth.bitrix.info`` (token exchange at
``/oauth/token/``, REST at ``server_endpoint`` = ``https://oauth.bitrix.info/rest/``); the sandbox plays both on one
host, so ``server_domain`` in the redirect points back at the sandbox and ``server_endpoint`` is ``{base}/oauth/rest/``.
Flow and field sets: REFERENCE 4.1-4.2, docs ``settings/oauth/{index,auto-renewal,error-codes}.md``.
"""

from __future__ import annotations

import html
import logging
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from . import errors, tokens
from .errors import RestError
from .rest import error_response, json_response, read_params
from .runtime import Sandbox
from .state import Application, AuthCode, token
from .wire import iso, time_block

log = logging.getLogger("b24bridge.sandbox")


def on_portal(app: Application | None) -> bool:
    """Whether the app is present on this portal: installed, or installed and awaiting ``installFinish``.

    ``application_token`` is issued at install and cleared at uninstall, so it marks presence.
    """
    return app is not None and bool(app.application_token)


class OAuthError(Exception):
    """``{"error", "error_description"}`` with the status the PHP SDK expects (REFERENCE 4.2)."""

    def __init__(self, code: str, description: str, status: int) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.status = status


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description, 400)


def invalid_client(description: str = "Invalid client credentials") -> OAuthError:
    return OAuthError("invalid_client", description, 401)


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description, 400)


def _portal(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def _error_page(title: str, message: str, status: int = 400) -> HTMLResponse:
    # The portal shows a page to the user and never redirects on error (docs settings/oauth/index.md).
    body = (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return HTMLResponse(body, status)


async def authorize(request: Request) -> Response:
    """``GET /oauth/authorize/?client_id=…&state=…``: issue a 30-second code and send the browser to the app.

    The sandbox has no login form: the acting user is the ``user_id`` query parameter (sandbox extension,
    default 1, the administrator), as if that user already had a session on the portal.
    """
    sandbox = _portal(request)
    query = request.query_params
    client_id = query.get("client_id", "")
    if not client_id:
        return _error_page("Authorization error", "client_id is not specified")
    app = sandbox.world.apps.get(client_id)
    if app is None or not on_portal(app):
        return _error_page("Authorization error", "The application is not installed on this Bitrix24")
    try:
        user_id = int(query.get("user_id", "1"))
    except ValueError:
        return _error_page("Authorization error", "user_id must be an integer")
    user = sandbox.world.users.get(user_id)
    if user is None or not user.active:
        return _error_page("Authorization error", f"No active user {user_id} on this Bitrix24", 403)
    code = AuthCode(token(), app.client_id, user_id, sandbox.now() + sandbox.config.auth_code_ttl)
    _forget_expired_codes(sandbox)
    sandbox.world.auth_codes[code.code] = code
    target = app.redirect_url or app.handler_url
    if not target:
        # An app without a redirect URI: the portal shows the code for the user to paste (docs oauth/index.md).
        return HTMLResponse(
            "<!DOCTYPE html><html><head><title>Authorization code</title></head>"
            f'<body><p>Authorization code: <code id="code">{code.code}</code></p></body></html>'
        )
    params = {
        "code": code.code,
        "state": query.get("state", ""),
        "domain": sandbox.domain,
        "member_id": sandbox.world.member_id,
        "scope": ",".join(app.scopes),
        # The sandbox is its own authorization server (real value: oauth.bitrix.info).
        "server_domain": sandbox.domain,
    }
    separator = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{separator}{urlencode(params)}", 302)


def _forget_expired_codes(sandbox: Sandbox) -> None:
    now = sandbox.now()
    codes = sandbox.world.auth_codes
    for key in [k for k, c in codes.items() if c.expires_at <= now]:
        del codes[key]


def _client(sandbox: Sandbox, params: dict[str, Any]) -> tuple[str, list[Sandbox]]:
    """The client_id, checked against its secret, and the portals of the cloud the application is present on.

    A local application is registered in one portal; a marketplace one, with the same keys, in several.
    """
    client_id, secret = params.get("client_id"), params.get("client_secret")
    if not isinstance(client_id, str) or not client_id:
        raise invalid_request("client_id is not specified")
    if not isinstance(secret, str) or not secret:
        raise invalid_request("client_secret is not specified")
    registered = [(p, p.world.apps[client_id]) for p in sandbox.cloud if client_id in p.world.apps]
    if not registered or any(app.client_secret != secret for _, app in registered):
        raise invalid_client()
    present = [p for p, app in registered if on_portal(app)]
    if not present:
        raise invalid_client("Application is not installed")
    return client_id, present


def _required(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise invalid_request(f"{name} is not specified")
    return value


def exchange(sandbox: Sandbox, params: dict[str, Any]) -> dict[str, Any]:
    """Run one ``/oauth/token/`` request; returns the token response or raises ``OAuthError``.

    The code or refresh token names the portal it belongs to; the answer is that portal's, whichever portal's
    ``/oauth/token/`` was asked (one OAuth server for the whole cloud).
    """
    grant_type = _required(params, "grant_type")
    if grant_type not in ("authorization_code", "refresh_token"):
        # Not in the Bitrix24 error table; RFC 6749 would say unsupported_grant_type. [inferred]
        raise invalid_request(f"Unsupported grant_type {grant_type}")
    client_id, portals = _client(sandbox, params)
    if grant_type == "authorization_code":
        value = _required(params, "code")
        owner = next((p for p in portals if value in p.world.auth_codes), None)
        code = owner.world.auth_codes.pop(value) if owner else None  # single use: gone even if it fails below
        if owner is None or code is None or code.expires_at <= owner.now() or code.client_id != client_id:
            raise invalid_grant("Invalid authorization code")
        user_id = code.user_id
    else:
        value = _required(params, "refresh_token")
        owner = next((p for p in portals if value in p.world.refresh_tokens), None)
        old = owner.world.refresh_tokens.get(value) if owner else None
        if owner is None or old is None or old.expires_at <= owner.now() or old.client_id != client_id:
            raise invalid_grant("Invalid refresh token")
        # Rotation: the old refresh token stops working at once (docs auto-renewal.md: store the new one).
        # The access tokens issued earlier stay valid until they expire. [inferred]
        del owner.world.refresh_tokens[old.token]
        user_id = old.user_id
    user = owner.world.users.get(user_id)
    if user is None or not user.active:
        raise invalid_grant("User is not active")
    app = owner.world.apps[client_id]
    pair = tokens.issue(owner, app, user_id)
    return tokens.token_response(owner, app, pair)


async def token_endpoint(request: Request) -> Response:
    """``/oauth/token/``: GET with a query string as documented; POST form accepted too (clients differ)."""
    sandbox = _portal(request)
    params = await read_params(request)
    # Counted so tests can prove how many requests reached the OAuth server (e.g. one refresh per storm).
    grant = str(params.get("grant_type", ""))
    sandbox.world.next_id(f"oauth_requests:{grant}")
    try:
        body = exchange(sandbox, params)
    except OAuthError as exc:
        sandbox.world.next_id(f"oauth_refused:{grant}:{exc.code}")
        log.info("oauth token request refused: %s", exc.code)
        return json_response({"error": exc.code, "error_description": exc.description}, exc.status)
    return json_response(body)


def server_app_info(sandbox: Sandbox, access_token: str) -> dict[str, Any]:
    """``app.info`` as the OAuth server answers it: the token's app, its expiry and user, and the installation.

    Field set from b24pysdk (``api/responses/bitrix_app_info_response.py``, ``schemas/api.py``); the portal's own
    ``app.info`` has a different shape (REFERENCE 4.5). Errors are the portal's for the same token problems;
    ``member_type`` and ``uri`` values are [inferred].
    """
    if not access_token:
        raise errors.no_auth()
    # The token's own portal answers, whichever port of the cloud was asked.
    sandbox = next((p for p in sandbox.cloud if access_token in p.world.access_tokens), sandbox)
    now = sandbox.now()
    record = sandbox.world.access_tokens.get(access_token)
    if record is None:
        raise errors.invalid_token()
    if record.expires_at <= now:
        raise errors.expired_token()
    app = sandbox.world.apps.get(record.client_id)
    if app is None or not on_portal(app):
        raise errors.invalid_token()
    scope = ",".join(app.scopes)
    return {
        "client_id": app.client_id,
        "scope": scope,
        "expires": iso(record.expires_at, sandbox.tz),
        "install": {
            "installed": app.installed,
            "version": app.version,
            "status": app.status,
            "scope": scope,
            "domain": sandbox.domain,
            "uri": sandbox.config.base_url,
            "client_endpoint": sandbox.client_endpoint,
            "member_id": sandbox.world.member_id,
            "member_type": "PORTAL",
        },
        "user_id": record.user_id,
    }


async def server_rest(request: Request) -> Response:
    """``{server_endpoint}{method}``: the OAuth server's REST; it knows ``app.info`` only. [inferred for the rest]"""
    sandbox = _portal(request)
    started = sandbox.now()
    method = request.path_params["method"].strip("/").lower().removesuffix(".json")
    try:
        params = await read_params(request)
        if method != "app.info":
            raise errors.method_not_found()
        auth = params.get("auth")
        result = server_app_info(sandbox, auth if isinstance(auth, str) else "")
    except RestError as exc:
        return error_response(exc)
    return json_response({"result": result, "time": time_block(started, sandbox.now(), 0.0, sandbox.tz)})


routes: list[BaseRoute] = [
    Route("/oauth/rest/{method:path}", server_rest, methods=["GET", "POST"]),
    Route("/oauth/authorize/", authorize, methods=["GET"]),
    Route("/oauth/authorize", authorize, methods=["GET"]),
    Route("/oauth/token/", token_endpoint, methods=["GET", "POST"]),
    Route("/oauth/token", token_endpoint, methods=["GET", "POST"]),
]
