"""HTTP endpoints of the portal registry: installation (three ways), uninstallation, the event handler."""

from __future__ import annotations

import html
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from b24bridge.observability import get_logger

from .install import Installer
from .oauth import OAuthFlow
from .schemas import InstallError
from .service import PortalRegistry

log = get_logger(__name__)
router = APIRouter(tags=["portals"])


# The services come from the application's lifespan state, which the composition root fills.
def _installer(request: Request) -> Installer:
    return cast(Installer, request.state.installer)


def _oauth_flow(request: Request) -> OAuthFlow:
    return cast(OAuthFlow, request.state.oauth_flow)


def _registry(request: Request) -> PortalRegistry:
    return cast(PortalRegistry, request.state.portal_registry)


InstallerDep = Annotated[Installer, Depends(_installer)]
OAuthFlowDep = Annotated[OAuthFlow, Depends(_oauth_flow)]
RegistryDep = Annotated[PortalRegistry, Depends(_registry)]


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _refused(exc: InstallError, what: str) -> JSONResponse:
    log.info("request refused", what=what, status=exc.status, reason=str(exc))
    return JSONResponse({"error": str(exc)}, exc.status)


def _page(title: str, body: str, status: int = 200, head: str = "") -> HTMLResponse:
    return HTMLResponse(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{head}</head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status,
    )


@router.post("/install")
async def install(request: Request, installer: InstallerDep) -> Response:
    """The install handler an API-only application registers: the ONAPPINSTALL event."""
    return await _install_event(installer, await _form(request))


@router.post("/install/page")
async def install_page(request: Request, installer: InstallerDep) -> Response:
    """The install page of an application opened in the portal's frame; the browser finishes the installation."""
    try:
        portal = await installer.from_frame(await _form(request), dict(request.query_params))
    except InstallError as exc:
        return _page("Installation failed", f"<p>{html.escape(str(exc))}</p>", exc.status)
    script = (
        "<script src='//api.bitrix24.com/api/v1/'></script>"
        "<script>BX24.init(function () { BX24.installFinish(); });</script>"
    )
    return _page("b24bridge installed", f"<p>{html.escape(portal.domain)}</p>", head=script)


@router.get("/oauth/start")
async def oauth_start(flow: OAuthFlowDep, domain: str = "") -> Response:
    try:
        return RedirectResponse(flow.start_url(domain), 302)
    except InstallError as exc:
        return _refused(exc, "oauth start")


@router.get("/oauth/callback")
async def oauth_callback(
    flow: OAuthFlowDep,
    code: str = "",
    state: str = "",
    domain: str = "",
    member_id: str = "",
    scope: str | None = None,
    server_domain: str | None = None,
) -> Response:
    try:
        del server_domain  # tokens are exchanged at the configured OAuth server, never one the caller names
        portal = await flow.finish(code=code, state=state, domain=domain, member_id=member_id, scope=scope)
    except InstallError as exc:
        log.info("request refused", what="oauth callback", status=exc.status, reason=str(exc))
        return _page("Installation failed", f"<p>{html.escape(str(exc))}</p>", exc.status)
    return _page("b24bridge installed", f"<p>Connected to {html.escape(portal.domain)}.</p>")


@router.post("/events")
async def events(request: Request, installer: InstallerDep, registry: RegistryDep) -> Response:
    """Events bound to this handler; each is proven by the portal's application_token."""
    form = await _form(request)
    event = form.get("event", "").upper()
    if event == "ONAPPINSTALL":  # some portals deliver it to the bound handler too
        return await _install_event(installer, form)
    if event == "ONAPPUNINSTALL":
        if not await installer.uninstall(form):
            return _unauthorised(event)
        return JSONResponse({"status": "uninstalled"})
    member_id, token = form.get("auth[member_id]", ""), form.get("auth[application_token]", "")
    if await registry.verify_application_token(member_id, token) is None:
        return _unauthorised(event)
    return JSONResponse({"status": "ignored", "event": event})


async def _install_event(installer: Installer, form: dict[str, Any]) -> Response:
    try:
        portal = await installer.from_event(form)
    except InstallError as exc:
        return _refused(exc, "install event")
    return JSONResponse({"status": "installed", "member_id": portal.member_id})


def _unauthorised(event: str) -> JSONResponse:
    log.info("event refused: wrong application token", bitrix_event=event)
    return JSONResponse({"error": "unknown portal or wrong application_token"}, 401)
