"""HTTP endpoints of the portal registry: installation (three ways), uninstallation, the event handler.

Every form and query is read by :mod:`b24bridge.forms` (bounded, NUL-free, typed); a refusal is a JSON error, or
an HTML page where a person's browser asked for one (the install page in the portal's frame, the OAuth callback).
"""

from __future__ import annotations

import html
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from b24bridge import apidoc, forms
from b24bridge.bodylimit import B24BRIDGE_LIMITS
from b24bridge.observability import get_logger

from .directory import UNKNOWN, PortalDirectory
from .install import Installer
from .oauth import BROWSER_COOKIE, OAuthFlow
from .schemas import Check, EventHandler, EventRefused, InstallError, portal_auth

log = get_logger(__name__)
router = APIRouter(tags=["portals"])

_INSTALL_LIMITS = forms.FormLimits(max_body_bytes=B24BRIDGE_LIMITS["/install"])
# A query string is part of the request head, which the server caps (b24bridge.server.MAX_HEAD_BYTES).
_QUERY_LIMITS = forms.FormLimits(max_fields=50, max_depth=1)
_AUTH_FIELDS = [
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
    "application_token",
]
_EVENT_FIELDS = {
    "event": "the event's name (ONAPPINSTALL, ONAPPUNINSTALL, ...)",
    "event_handler_id": "the binding's id",
    "ts": "unix time the portal sent the event",
    **{f"auth[{name}]": f"auth: {name}" for name in _AUTH_FIELDS},
    **{f"data[{name}]": f"data: {name}" for name in ("VERSION", "ACTIVE", "INSTALLED", "LANGUAGE_ID", "CLEAN")},
}
_FRAME_FIELDS = {
    name: f"the install page's {name}"
    for name in [
        "AUTH_ID",
        "AUTH_EXPIRES",
        "REFRESH_ID",
        "SERVER_ENDPOINT",
        "APPLICATION_TOKEN",
        "APPLICATION_SCOPE",
        "member_id",
        "status",
        "PLACEMENT",
        "PLACEMENT_OPTIONS",
    ]
}


# The services come from the application's lifespan state, which the composition root fills.
async def _installer(request: Request) -> Installer:
    return cast(Installer, request.state.installer)


async def _oauth_flow(request: Request) -> OAuthFlow:
    return cast(OAuthFlow, request.state.oauth_flow)


async def _directory(request: Request) -> PortalDirectory:
    return cast(PortalDirectory, request.state.portal_directory)


InstallerDep = Annotated[Installer, Depends(_installer)]
OAuthFlowDep = Annotated[OAuthFlow, Depends(_oauth_flow)]
DirectoryDep = Annotated[PortalDirectory, Depends(_directory)]


def _query(request: Request) -> dict[str, Any]:
    return forms.parse_form(request.scope.get("query_string", b""), _QUERY_LIMITS)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _refused(exc: InstallError | forms.FormError, what: str) -> JSONResponse:
    status = exc.status
    log.info("request refused", what=what, status=status, reason=str(exc))
    payload = exc.payload() if isinstance(exc, forms.FormError) else {"error": str(exc)}
    return JSONResponse(payload, status)


def _page(title: str, body: str, status: int = 200, head: str = "") -> HTMLResponse:
    return HTMLResponse(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{head}</head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status,
    )


def _failed(request: Request, exc: InstallError | forms.FormError, what: str) -> Response:
    """A refusal to a person's browser as a page, to anything else as the JSON error."""
    if "text/html" not in request.headers.get("accept", ""):
        return _refused(exc, what)
    log.info("request refused", what=what, status=exc.status, reason=str(exc))
    return _page("Installation failed", f"<p>{html.escape(str(exc))}</p>", exc.status)


_PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "the page for the administrator"}
}


@router.post(
    "/install",
    openapi_extra=apidoc.form_body(_EVENT_FIELDS, required=["event"]),
    responses=apidoc.error_responses(400, 401, 408, 413, 429, 503),
)
async def install(request: Request, installer: InstallerDep) -> Response:
    """The install handler an API-only application registers: the ONAPPINSTALL event."""
    form = await forms.read_form(await request.body(), _INSTALL_LIMITS)
    return await _install_event(installer, form, _client(request))


@router.post(
    "/install/page",
    openapi_extra=apidoc.form_body(_FRAME_FIELDS, required=["AUTH_ID", "REFRESH_ID", "member_id"])
    | {
        "parameters": [
            {"name": name, "in": "query", "schema": {"type": "string"}, "required": name == "DOMAIN"}
            for name in ("DOMAIN", "PROTOCOL", "LANG", "APP_SID")
        ]
    },
    responses=_PAGE_RESPONSES | apidoc.error_responses(400, 401, 408, 413, 429, 503),
)
async def install_page(request: Request, installer: InstallerDep) -> Response:
    """The install page of an application opened in the portal's frame; the browser finishes the installation."""
    try:
        form = await forms.read_form(await request.body(), _INSTALL_LIMITS)
        portal = await installer.from_frame(form, _query(request), _client(request))
    except (InstallError, forms.FormError) as exc:
        return _failed(request, exc, "install page")
    script = (
        "<script src='//api.bitrix24.com/api/v1/'></script>"
        "<script>BX24.init(function () { BX24.installFinish(); });</script>"
    )
    return _page("b24bridge installed", f"<p>{html.escape(portal.domain)}</p>", head=script)


_REDIRECT: dict[int | str, dict[str, Any]] = {302: {"description": "to the portal's authorisation page"}}


@router.get("/oauth/start", responses=_REDIRECT | apidoc.error_responses(400, 503))
async def oauth_start(request: Request, flow: OAuthFlowDep, domain: str = "") -> Response:
    """Send the administrator to the portal ``domain`` to authorise b24bridge; sets the flow's browser cookie."""
    del domain  # documents the parameter; its value is read through the form checks
    try:
        start = flow.start(forms.text(_query(request), "domain", max_len=255))
    except (InstallError, forms.FormError) as exc:
        return _refused(exc, "oauth start")
    response = RedirectResponse(start.url, 302)
    # Behind a trusted proxy uvicorn takes the scheme from X-Forwarded-Proto (serve's forwarded_allow_ips).
    secure = request.url.scheme == "https"
    response.set_cookie(
        BROWSER_COOKIE, start.browser_secret, max_age=start.max_age, path="/oauth", secure=secure, httponly=True
    )
    return response


@router.get("/oauth/callback", responses=_PAGE_RESPONSES | apidoc.error_responses(400, 401, 429, 503))
async def oauth_callback(
    request: Request,
    flow: OAuthFlowDep,
    code: str = "",
    state: str = "",
    domain: str = "",
    member_id: str = "",
    scope: str | None = None,
    server_domain: str | None = None,
) -> Response:
    """The portal's redirect back: checked against the flow this browser started, then the code is exchanged."""
    # The parameters above document the callback; the values are read through the form checks.
    del code, state, domain, member_id, scope, server_domain  # tokens go to the configured OAuth server only
    try:
        query = _query(request)
        portal = await flow.finish(
            code=forms.optional_text(query, "code", max_len=256) or "",
            state=forms.optional_text(query, "state", max_len=1024) or "",
            domain=forms.optional_text(query, "domain", max_len=255) or "",
            member_id=forms.optional_text(query, "member_id", max_len=64) or "",
            scope=forms.optional_text(query, "scope"),
            browser_secret=request.cookies.get(BROWSER_COOKIE),
            client=_client(request),
        )
    except (InstallError, forms.FormError) as exc:
        return _failed(request, exc, "oauth callback")
    response = _page("b24bridge installed", f"<p>Connected to {html.escape(portal.domain)}.</p>")
    response.delete_cookie(BROWSER_COOKIE, path="/oauth")
    return response


@router.post(
    "/events",
    openapi_extra=apidoc.form_body(_EVENT_FIELDS, required=["event"], more="the event's data[...] fields"),
    responses=apidoc.error_responses(400, 401, 408, 413, 429, 503),
)
async def events(request: Request, installer: InstallerDep, directory: DirectoryDep) -> Response:
    """Events bound to this handler; each is proven by the portal's application_token."""
    form = await forms.read_form(await request.body())
    event = (forms.optional_text(form, "event", max_len=64) or "").upper()
    if event == "ONAPPINSTALL":  # some portals deliver it to the bound handler too
        return await _install_event(installer, form, _client(request))
    if event == "ONAPPUNINSTALL":
        if not await installer.uninstall(form):
            return _unauthorised(event)
        return JSONResponse({"status": "uninstalled"})
    member_id, token = portal_auth(form)
    verdict = await directory.check(member_id or "", token or "")
    if verdict is None or member_id is None or token is None:
        return _unauthorised(event)
    handlers = cast(dict[str, EventHandler], getattr(request.state, "event_handlers", {}))
    handler = handlers.get(event)
    if handler is None:
        return JSONResponse({"status": "ignored", "event": event})
    # The database is away and this process has not seen the portal: the event is checked when drained.
    check = Check(member_id, token) if verdict is UNKNOWN else None
    try:
        answer = await handler(member_id, event, form, getattr(request.state, "correlation_id", None), check)
    except EventRefused as exc:
        return JSONResponse({"error": str(exc)}, exc.status)
    return JSONResponse(answer)


async def _install_event(installer: Installer, form: dict[str, Any], client: str | None) -> Response:
    try:
        portal = await installer.from_event(form, client)
    except InstallError as exc:
        return _refused(exc, "install event")
    return JSONResponse({"status": "installed", "member_id": portal.member_id})


def _unauthorised(event: str) -> JSONResponse:
    log.info("event refused: wrong application token", bitrix_event=forms.shown(event))
    return JSONResponse({"error": "unknown portal or wrong application_token"}, 401)
