"""Local applications: registering, installing, finishing installation, updating, uninstalling.

Control endpoints (not Bitrix24 surface) that do what the portal does when an administrator adds a local app:

* ``api_only`` apps ("Script only (no user interface)") get the ONAPPINSTALL event POSTed to the installation URL
  and count as installed at once (docs installation-finish.md, REFERENCE 4.3b);
* UI apps get the install page opened in a frame: a POST with DOMAIN/PROTOCOL/LANG/APP_SID in the query and
  AUTH_ID/REFRESH_ID/... in the body (REFERENCE 4.3a); they stay ``INSTALLED=false`` until ``install-finish``
  (what ``BX24.installFinish()`` does). A UI app without an installation URL is installed at once [inferred].

Installing an app that is already present is a version update: the version goes up, a new ``application_token``
is issued (docs safe-event-handlers.md: "After a new application version is installed, Bitrix24 passes a new token"),
ONAPPUPDATE goes to its bound handlers, then its event handlers and its robots are removed (docs event-bind.md: "When
deleting and updating the application, its actions will be removed"; REFERENCE 5.1 / docs bizproc-robot-delete.md:
robots are removed when the app is deleted or updated) and the installer runs again so that it can rebind and
re-register. Automation rules that place a removed robot stay; until the robot is registered again, a deal entering
their stage records a failed workflow.
"""

from __future__ import annotations

import dataclasses
import secrets
import string
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from . import outbound, tokens
from .control import ControlError, body_of, control, portal, reply
from .eventbus import LANGUAGE_ID, bare_auth, deliver_now, new_handler_id, payload
from .oauth import on_portal
from .runtime import Sandbox
from .state import Application, token

_ALNUM = string.ascii_letters + string.digits


def new_client_id(marketplace: bool = False) -> str:
    """``local.`` (or ``app.`` for a marketplace application) + 14 hex + ``.`` + 8 digits (REFERENCE 4.5)."""
    return f"{'app' if marketplace else 'local'}.{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}"


def new_client_secret() -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(50))  # 50 characters like the docs' example secret


def view(app: Application) -> dict[str, Any]:
    return dataclasses.asdict(app)


def _app(sandbox: Sandbox, client_id: str) -> Application:
    app = sandbox.world.apps.get(client_id)
    if app is None:
        raise ControlError(f"no application {client_id}", 404)
    return app


def _installed_app(request: Request, hint: str = "") -> Application:
    """The application of the request's ``client_id``, which must be on the portal (409 otherwise)."""
    app = _app(portal(request), request.path_params["client_id"])
    if not on_portal(app):
        raise ControlError(f"application {app.client_id} is not installed{hint}", 409)
    return app


def _url(data: dict[str, Any], key: str) -> str:
    value = str(data.get(key) or "")
    if value and urlsplit(value).scheme not in ("http", "https"):
        raise ControlError(f"{key} must be an http(s) URL")
    return value


@control
async def apps_endpoint(request: Request) -> Response:
    sandbox = portal(request)
    if request.method == "GET":
        return reply({"apps": [view(a) for a in sandbox.world.apps.values()]})
    data = await body_of(request)
    scopes = data.get("scopes", ["crm", "user"])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ControlError("scopes must be a list of strings")
    marketplace = bool(data.get("marketplace", False))
    app = Application(
        new_client_id(marketplace),
        new_client_secret(),
        str(data.get("name") or ("Marketplace application" if marketplace else "Local application")),
        handler_url=_url(data, "handler_url"),
        install_url=_url(data, "install_url"),
        redirect_url=_url(data, "redirect_url"),
        scopes=list(scopes),
        # A local app is "L"; a marketplace app's status is its payment state, free here (REFERENCE 4.2, 4.5).
        status="F" if marketplace else "L",
        api_only=bool(data.get("api_only", False)),
    )
    sandbox.world.apps[app.client_id] = app
    return reply(view(app), 201)


@control
async def register_endpoint(request: Request) -> Response:
    """Register in this portal a marketplace application another portal of the cloud already knows.

    Like adding a Marketplace app to one more portal: the same client_id and secret, installed separately (its own
    version, application_token and tokens here). A local application's keys are valid on its own portal only.
    """
    sandbox = portal(request)
    client_id = request.path_params["client_id"]
    if client_id in sandbox.world.apps:
        raise ControlError(f"application {client_id} is already registered in this portal", 409)
    source = next((p.world.apps[client_id] for p in sandbox.cloud if client_id in p.world.apps), None)
    if source is None:
        raise ControlError(f"no portal of this cloud knows application {client_id}", 404)
    if source.status == "L":
        raise ControlError("a local application belongs to one portal; create it with marketplace: true")
    app = Application(
        source.client_id,
        source.client_secret,
        source.name,
        handler_url=source.handler_url,
        install_url=source.install_url,
        redirect_url=source.redirect_url,
        scopes=list(source.scopes),
        status=source.status,
        api_only=source.api_only,
    )
    sandbox.world.apps[app.client_id] = app
    return reply(view(app), 201)


@control
async def app_detail(request: Request) -> Response:
    sandbox = portal(request)
    return reply(view(_app(sandbox, request.path_params["client_id"])))


def install_event(sandbox: Sandbox, app: Application, pair: tokens.TokenPair, user_id: int) -> dict[str, Any]:
    """ONAPPINSTALL as POSTed to an API-only app's installation URL (REFERENCE 4.3b, with expires/user_id)."""
    data = {"VERSION": str(app.version), "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": LANGUAGE_ID}
    # [inferred] event_handler_id: the portal registers the install URL as a handler; PHP SDK fixtures carry one.
    return payload(
        sandbox, "ONAPPINSTALL", new_handler_id(sandbox.world), data, tokens.auth_block(sandbox, app, pair, user_id)
    )


def install_frame(sandbox: Sandbox, app: Application, pair: tokens.TokenPair) -> tuple[str, dict[str, Any]]:
    """The install page opened in the portal's frame: (URL with query, form body) (REFERENCE 4.3a)."""
    query = {
        "DOMAIN": sandbox.domain,
        "PROTOCOL": "1" if sandbox.config.base_url.startswith("https://") else "0",
        "LANG": LANGUAGE_ID,
        "APP_SID": token(),
    }
    body = {
        "AUTH_ID": pair.access.token,
        "AUTH_EXPIRES": str(sandbox.config.access_token_ttl),
        "REFRESH_ID": pair.refresh.token,
        "SERVER_ENDPOINT": sandbox.server_endpoint,
        "APPLICATION_TOKEN": app.application_token,
        "APPLICATION_SCOPE": ",".join(app.scopes),
        "member_id": sandbox.world.member_id,
        "status": app.status,
        "PLACEMENT": "DEFAULT",
    }
    separator = "&" if "?" in app.install_url else "?"
    return f"{app.install_url}{separator}{urlencode(query)}", body


def _drop_bindings(sandbox: Sandbox, client_id: str) -> None:
    world = sandbox.world
    world.event_bindings[:] = [b for b in world.event_bindings if b["client_id"] != client_id]
    world.offline_events[:] = [e for e in world.offline_events if e["client_id"] != client_id]


def _drop_robots(sandbox: Sandbox, client_id: str) -> list[str]:
    """Remove every robot (and activity) ``client_id`` registered; returns their codes."""
    robots = sandbox.world.robots
    keys = [k for k in robots if k.startswith(f"{client_id}|")]
    codes = [str(robots[k].get("CODE", k.split("|", 1)[1])) for k in keys]
    for key in keys:
        del robots[key]
    return codes


async def install(sandbox: Sandbox, app: Application, user_id: int) -> dict[str, Any]:
    """Install (or update) ``app`` for administrator ``user_id``; the calls to the app are awaited."""
    result: dict[str, Any] = {"updated": False, "update_calls": [], "install_call": None}
    if on_portal(app):
        result["updated"] = True
        result["previous_version"] = app.version
        was_installed = app.installed
        app.version += 1
        app.application_token = token()
        if was_installed:
            data = {"VERSION": str(app.version), "PREVIOUS_VERSION": str(app.version - 1), "LANGUAGE_ID": LANGUAGE_ID}
            result["update_calls"] = await deliver_now(sandbox, app, "ONAPPUPDATE", data, user_id)
        _drop_bindings(sandbox, app.client_id)
        result["removed_robots"] = _drop_robots(sandbox, app.client_id)
    else:
        app.application_token = token()
    app.installed_by = user_id
    pair = tokens.issue(sandbox, app, user_id)
    meta = {"client_id": app.client_id}
    if app.api_only:
        app.installed = True  # "The application is immediately considered installed" (installation-finish.md)
        if app.install_url:
            body = install_event(sandbox, app, pair, user_id)
            result["install_call"] = await outbound.post_form(
                sandbox, "install", app.install_url, body, event="ONAPPINSTALL", **meta
            )
    elif app.install_url:
        app.installed = False  # until BX24.installFinish()
        url, body = install_frame(sandbox, app, pair)
        result["install_call"] = await outbound.post_form(sandbox, "install", url, body, **meta)
    else:
        app.installed = True
    result["app"] = view(app)
    # The installer's token pair, as the OAuth server would answer it: handy for tests of apps without a handler.
    result["tokens"] = tokens.token_response(sandbox, app, pair)
    return result


@control
async def install_endpoint(request: Request) -> Response:
    sandbox = portal(request)
    app = _app(sandbox, request.path_params["client_id"])
    data = await body_of(request)
    user_id = int(data.get("user_id", 1))
    user = sandbox.world.users.get(user_id)
    if user is None or not user.active:
        raise ControlError(f"no active user {user_id}")
    if not user.admin:
        raise ControlError(f"user {user_id} is not an administrator; only administrators install applications", 403)
    return reply(await install(sandbox, app, user_id))


@control
async def install_finish_endpoint(request: Request) -> Response:
    app = _installed_app(request, "; install it first")
    app.installed = True
    return reply(view(app))


async def uninstall(sandbox: Sandbox, app: Application, clean: bool) -> dict[str, Any]:
    """ONAPPUNINSTALL to the app's bound handlers, then remove everything the app had on the portal.

    Delivered only to handlers bound with ``event.bind`` (docs on-app-uninstall.md: "Who can subscribe"); the docs
    describe no fallback to the installation URL, so with no binding nothing is sent. The event name on the wire is
    ONAPPUNINSTALL (the doc page's ``ONAPPSUNINSTALL`` is a typo; handlers in the wild match ONAPPUNINSTALL).
    The app need not have finished installation for this to be sent. [inferred]
    """
    calls = []
    for binding in [
        b
        for b in sandbox.world.event_bindings
        if b["client_id"] == app.client_id and b["event"] == "ONAPPUNINSTALL" and not b.get("offline")
    ]:
        body = payload(
            sandbox,
            "ONAPPUNINSTALL",
            int(binding["id"]),
            {"LANGUAGE_ID": LANGUAGE_ID, "CLEAN": "1" if clean else "0"},
            bare_auth(sandbox, app),
        )
        calls.append(
            await outbound.post_form(
                sandbox,
                "event",
                str(binding["handler"]),
                body,
                event="ONAPPUNINSTALL",
                client_id=app.client_id,
                event_handler_id=binding["id"],
            )
        )
    world = sandbox.world
    tokens.revoke_app(sandbox, app.client_id)
    for key in [k for k, c in world.auth_codes.items() if c.client_id == app.client_id]:
        del world.auth_codes[key]
    _drop_robots(sandbox, app.client_id)
    _drop_bindings(sandbox, app.client_id)
    app.installed = False
    app.application_token = ""
    return {"app": view(app), "calls": calls}


@control
async def uninstall_endpoint(request: Request) -> Response:
    app = _installed_app(request)
    data = await body_of(request)
    return reply(await uninstall(portal(request), app, bool(data.get("clean", False))))


control_routes: list[BaseRoute] = [
    Route("/_sandbox/apps", apps_endpoint, methods=["GET", "POST"]),
    Route("/_sandbox/apps/{client_id}", app_detail, methods=["GET"]),
    Route("/_sandbox/apps/{client_id}/register", register_endpoint, methods=["POST"]),
    Route("/_sandbox/apps/{client_id}/install", install_endpoint, methods=["POST"]),
    Route("/_sandbox/apps/{client_id}/install-finish", install_finish_endpoint, methods=["POST"]),
    Route("/_sandbox/apps/{client_id}/uninstall", uninstall_endpoint, methods=["POST"]),
]
