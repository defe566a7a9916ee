"""The admin API under ``/api``: portals, routes, runs (filters, detail, counts), replay, robot sync. JSON in and out,
a bearer token (``B24BRIDGE_ADMIN_TOKEN``) on every request; documented at ``/docs``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from b24bridge.apidoc import error_responses
from b24bridge.observability import get_logger
from b24bridge.runs.schemas import RunFilter

from ..schemas import (
    MAX_RUN_ID,
    PortalDetail,
    PortalHealth,
    ReplayRequest,
    ReplayResult,
    RouteInfo,
    RunDetail,
    RunKind,
    RunOut,
    RunStatus,
    SyncRequest,
    SyncResult,
)
from ..service import SINCE_HELP, run_filter
from .door import ServiceDep, api_caller

log = get_logger(__name__)

router = APIRouter(
    prefix="/api",
    tags=["admin"],
    dependencies=[Depends(api_caller)],
    responses=error_responses(
        400,
        401,
        403,
        404,
        described={
            400: "a filter or field that is not valid (the error names it)",
            401: "no admin token, or a wrong one (Authorization: Bearer ...)",
            403: "no admin token is configured and the request is not from loopback",
            404: "no such resource, or the admin API is off (no admin token configured, not the embedded defaults)",
        },
    ),
)
RunId = Annotated[int, Path(ge=1, le=MAX_RUN_ID)]


def _filter(**values: Any) -> RunFilter:
    try:
        return run_filter(**values)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


async def _run_filter_query(
    status: RunStatus | None = None,
    kind: RunKind | None = None,
    route: Annotated[str | None, Query(max_length=200)] = None,
    portal: Annotated[str | None, Query(max_length=200, description="member_id, or a route file portal key")] = None,
    since: Annotated[str | None, Query(max_length=64, description=f"created since: {SINCE_HELP}")] = None,
) -> RunFilter:
    return _filter(status=status, kind=kind, route=route, portal=portal, since=since)


RunFilterDep = Annotated[RunFilter, Depends(_run_filter_query)]


@router.get("/portals", summary="Installed portals and their health")
async def list_portals(service: ServiceDep) -> list[PortalHealth]:
    return await service.portals()


@router.get("/portals/{member_id}", summary="One portal's health and its latest events")
async def get_portal(member_id: Annotated[str, Path(max_length=64)], service: ServiceDep) -> PortalDetail:
    found = await service.portal(member_id)
    if found is None:
        raise HTTPException(404, "no such portal")
    return found


@router.get("/routes", summary="The bridge's routes (B24BRIDGE_ROUTES), without secrets")
async def list_routes(service: ServiceDep) -> list[RouteInfo]:
    return await service.routes()


@router.get("/runs", summary="Runs, newest first, filtered by status, kind, route, portal and time")
async def list_runs(
    service: ServiceDep, where: RunFilterDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[RunOut]:
    return await service.runs(where, limit)


@router.get("/runs/counts", summary="Runs the filter selects, per status (its own status left aside)")
async def count_runs(service: ServiceDep, where: RunFilterDep) -> dict[str, int]:
    return await service.counts(where)


@router.get("/runs/{run_id}", summary="One run: inputs (no secrets), outcome, error and every outbound call")
async def get_run(run_id: RunId, service: ServiceDep) -> RunDetail:
    found = await service.run(run_id)
    if found is None:
        raise HTTPException(404, "no such run")
    return found


@router.post("/runs/{run_id}/replay", summary="Take one dead run back in")
async def replay_run(run_id: RunId, service: ServiceDep) -> ReplayResult:
    return _logged(await service.replay([run_id]))


@router.post("/runs/replay", summary="Take dead runs back in: by id, or every dead run matching filters")
async def replay_runs(body: ReplayRequest, service: ServiceDep) -> ReplayResult:
    if body.run_ids is not None:
        return _logged(await service.replay(body.run_ids))
    where = _filter(kind=body.kind, route=body.route, portal=body.portal, since=body.since)
    return _logged(await service.replay_dead(where))


def _logged(result: ReplayResult) -> ReplayResult:
    log.info("admin.replay", replayed=result.replayed, not_dead=result.not_dead, via="api")
    return result


@router.post("/robots/sync", summary="Register the declared robots in one portal or every active one")
async def sync_robots(service: ServiceDep, body: SyncRequest | None = None) -> list[SyncResult]:
    return await service.sync_robots(body.portal if body is not None else None)
