"""The admin page under ``/admin`` (``/`` leads there): runs with filters and live counts, a run with its calls,
replay, portals and their health, robot sync, routes; the login. Server-rendered HTML, htmx for the live parts."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from b24bridge.forms import FormError, optional_text, read_form, text_list
from b24bridge.observability import get_logger
from b24bridge.runs.schemas import RunFilter

from ..access import SESSION_COOKIE, safe_return_path
from ..schemas import MAX_RUN_ID, RunOut
from ..service import AdminService, run_filter
from ..views import STATIC_FILES, query, render, static_path
from .door import (
    HOME,
    LOGIN,
    PostedDep,
    ServiceDep,
    ViewerDep,
    client_of,
    gate_of,
    html,
    message,
    page,
    refusal_of,
    refused,
    set_session,
)

log = get_logger(__name__)

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
# The runs page's filters: read as text, so whatever was typed comes back on the page with what is wrong with it.
FILTERS = ("status", "kind", "route", "portal", "since")
MAX_PARAMETER = 256


@router.get("/")
@router.get("/admin")
@router.get("/admin/")
async def home() -> RedirectResponse:
    return RedirectResponse(HOME, 303)


@router.get("/admin/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC_FILES:
        return Response(status_code=404)
    # Addressed with ?v=<version>, so a browser may keep them.
    headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
    return FileResponse(static_path(name), media_type=STATIC_FILES[name], headers=headers)


# --- login --------------------------------------------------------------------------------------------------------


def _login_page(request: Request, next_path: str, error: str | None = None, status: int = 200) -> Response:
    refusal = refusal_of(request)
    if refusal is not None:
        return refused(request, refusal)
    if not gate_of(request).token_required:
        return RedirectResponse(next_path, 303)
    context = {"title": "Log in", "next": next_path, "error": error, "csrf": "", "section": ""}
    return html(render("login.html", **context), status)


@router.get("/admin/login")
async def login_form(request: Request, next: str = "") -> Response:
    return _login_page(request, safe_return_path(next[:2048], HOME))


@router.post("/admin/login")
async def login(request: Request) -> Response:
    try:
        form = await read_form(await request.body())
        token = optional_text(form, "token", max_len=1024)
        next_path = safe_return_path(optional_text(form, "next", max_len=2048), HOME)
    except FormError as exc:
        return message(request, 400, "Refused", exc.payload()["error"])
    gate = gate_of(request)
    if not gate.token_required or refusal_of(request) is not None:
        return _login_page(request, next_path)
    if not gate.token_matches(token):
        log.warning("admin.login_refused", client=client_of(request))
        return _login_page(request, next_path, "That is not the admin token.", 401)
    log.info("admin.login", client=client_of(request))
    response = RedirectResponse(next_path, 303)
    set_session(request, response, gate.new_session())
    return response


@router.post("/admin/logout")
async def logout(posted: PostedDep) -> Response:
    response = RedirectResponse(LOGIN if posted.viewer.can_log_out else HOME, 303)
    response.delete_cookie(SESSION_COOKIE, path="/admin", httponly=True, samesite="strict")
    return response


# --- runs ---------------------------------------------------------------------------------------------------------


def _ids(text: str, limit: int = PAGE_SIZE) -> list[int]:
    """``"12,13"`` -> [12, 13]: ASCII digits only (``int('²')`` raises), within the id range, at most ``limit``."""
    ids = [int(part) for part in text[:4096].split(",") if part.isascii() and part.isdigit() and len(part) <= 19]
    return [run_id for run_id in ids if 1 <= run_id <= MAX_RUN_ID][:limit]


def _filters(request: Request) -> dict[str, str]:
    return {name: request.query_params.get(name, "")[:MAX_PARAMETER] for name in FILTERS}


def _where(filters: dict[str, str]) -> tuple[RunFilter | None, str | None]:
    """The filter, or None and what is wrong with it (shown on the page)."""
    try:
        where = run_filter(
            status=filters["status"],
            kind=filters["kind"],
            route=filters["route"],
            portal=filters["portal"],
            since=filters["since"],
        )
        return where, None
    except ValueError as exc:
        return None, str(exc)


async def _listed(service: AdminService, where: RunFilter | None) -> list[RunOut]:
    return await service.runs(where, PAGE_SIZE) if where is not None else []


@router.get("/admin/runs")
async def runs_page(
    request: Request, viewer: ViewerDep, service: ServiceDep, replayed: str = "", not_dead: str = ""
) -> Response:
    filters = _filters(request)
    where, error = _where(filters)
    replayed_ids = _ids(replayed)
    return page(
        request,
        viewer,
        "runs.html",
        title="Runs",
        section="runs",
        filters=filters,
        filter_query=query(**filters),
        back="/admin/runs?" + query(**filters),
        error=error,
        runs=await _listed(service, where),
        counts=await service.counts(where or RunFilter()),
        current_status=filters["status"],
        route_names=[route.name for route in await service.routes()],
        portal_names=await service.portal_names(),
        replay_done="replayed" in request.query_params,
        replayed_ids=replayed_ids,
        replayed_runs=await service.runs_by_id(replayed_ids),
        replayed_count=len(replayed_ids),
        not_dead=_ids(not_dead),
    )


@router.get("/admin/runs/counts")
async def runs_counts(request: Request, viewer: ViewerDep, service: ServiceDep) -> Response:
    filters = _filters(request)
    where, _ = _where(filters)
    counts = await service.counts(where or RunFilter())
    context: dict[str, Any] = {
        "filters": filters,
        "filter_query": query(**filters),
        "current_status": filters["status"],
    }
    return page(request, viewer, "_counts.html", counts=counts, **context)


@router.get("/admin/runs/table")
async def runs_table(
    request: Request, viewer: ViewerDep, service: ServiceDep, ids: str = "", table: str = "runs"
) -> Response:
    """The runs table alone (htmx swaps it in while runs in it are under way): a filter's, or given runs'."""
    filters = _filters(request)
    table_id = "replayed" if table == "replayed" else "runs"
    if table_id == "replayed":
        runs, table_url = await service.runs_by_id(_ids(ids)), "/admin/runs/table?" + query(ids=ids, table=table_id)
    else:
        runs, table_url = await _listed(service, _where(filters)[0]), "/admin/runs/table?" + query(**filters)
    back = "/admin/runs?" + query(**filters)
    context: dict[str, Any] = {"runs": runs, "table_id": table_id, "table_url": table_url, "back": back}
    return page(request, viewer, "_runs_table.html", **context)


@router.get("/admin/runs/{run_id}")
async def run_page(request: Request, run_id: str, viewer: ViewerDep, service: ServiceDep) -> Response:
    numbers = _ids(run_id, 1)
    found = await service.run(numbers[0]) if numbers else None
    if found is None:
        return message(request, 404, "No such run", "There is no run with that id.")
    back = f"/admin/runs/{found.id}"
    return page(request, viewer, "run.html", title=f"Run {found.id}", section="runs", run=found, back=back)


@router.post("/admin/runs/replay")
async def replay(request: Request, posted: PostedDep, service: ServiceDep) -> Response:
    """Replay the runs the form names (one button, or every dead run shown), then back to where it was pressed."""
    try:
        run_ids = _ids(",".join(text_list(posted.form, "run_ids", max_items=PAGE_SIZE, max_len=19)))
        back = safe_return_path(optional_text(posted.form, "back", max_len=2048), HOME)
    except FormError as exc:
        return message(request, 400, "Refused", exc.payload()["error"])
    result = await service.replay(run_ids)
    log.info("admin.replay", replayed=result.replayed, not_dead=result.not_dead, via="page")
    outcome = {"replayed": ",".join(map(str, result.replayed)), "not_dead": ",".join(map(str, result.not_dead))}
    # Both always, even empty: the page says what came of the replay, nothing included.
    return RedirectResponse(_with_query(back, **outcome), 303)


def _with_query(path: str, **values: str) -> str:
    parts = urlsplit(path)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in values]
    return f"{parts.path}?{urlencode(kept + list(values.items()))}"


# --- portals and routes -------------------------------------------------------------------------------------------


@router.get("/admin/portals")
async def portals_page(request: Request, viewer: ViewerDep, service: ServiceDep) -> Response:
    portals = await service.portals()
    return page(request, viewer, "portals.html", title="Portals", section="portals", portals=portals, reports=None)


@router.post("/admin/robots/sync")
async def sync_robots(request: Request, posted: PostedDep, service: ServiceDep) -> Response:
    try:
        member_id = optional_text(posted.form, "portal", max_len=64)
    except FormError as exc:
        return message(request, 400, "Refused", exc.payload()["error"])
    reports = await service.sync_robots(member_id or None)
    log.info(
        "admin.robot_sync", portals=[r.member_id for r in reports], failed=[r.member_id for r in reports if r.error]
    )
    portals = await service.portals()
    context: dict[str, Any] = {"title": "Portals", "section": "portals", "portals": portals, "reports": reports}
    return page(request, posted.viewer, "portals.html", **context)


@router.get("/admin/routes")
async def routes_page(request: Request, viewer: ViewerDep, service: ServiceDep) -> Response:
    context: dict[str, Any] = {"title": "Routes", "section": "routes", "routes": await service.routes()}
    return page(request, viewer, "routes.html", path=service.routes_path(), **context)


@router.get("/admin/{rest:path}")
async def not_found(request: Request) -> Response:
    return message(request, 404, "Not found", "There is no such page.")
