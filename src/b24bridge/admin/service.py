"""What the admin page and API show and do, built from the domains' own services (in the composition root).

Nothing here reads a table of its own: portals come from the registry (their token standing, never tokens), runs from
the run log, routes from the loaded route file (webhook hosts only: a webhook's URL carries its secret), robots from
the sync. Replaying is the composition root's (it queues jobs), so it is handed in as a callable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Literal
from urllib.parse import urlsplit

from b24bridge.bitrix.limiter import Limiter
from b24bridge.bridge.connections import Connections
from b24bridge.bridge.route_model import PortalRef, Route, RouteFile
from b24bridge.portals.schemas import PortalStanding
from b24bridge.portals.service import PortalRegistry
from b24bridge.robots.sync import RobotSync
from b24bridge.runs.schemas import KINDS, STATUSES, Run, RunFilter
from b24bridge.runs.service import RunLog
from b24bridge.settings import parse_durations

from .schemas import (
    LimitsInUse,
    PortalDetail,
    PortalEvent,
    PortalHealth,
    ReplayResult,
    RouteInfo,
    RoutePortal,
    RouteTriggers,
    RunCallOut,
    RunDetail,
    RunOut,
    SyncResult,
)

Replay = Callable[[list[int]], Awaitable[list[int]]]

# Replayed in transactions of this many runs, so one replay of thousands never holds one long transaction.
REPLAY_CHUNK = 100
MAX_REPLAYED_AT_ONCE = 10_000
SINCE_HELP = "a duration back from now like 30m, 2h or 7d, or a date like 2026-11-26 or 2026-11-26T10:00 (UTC)"


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """``"2h"`` -> two hours before ``now``; ``"2026-11-26"`` / ``"2026-11-26T10:00"`` -> that time (UTC if no zone)."""
    text = text.strip()
    try:
        [seconds] = parse_durations(text)
        return now - dt.timedelta(seconds=seconds)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since: {SINCE_HELP}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def run_filter(
    *,
    status: str | None = None,
    kind: str | None = None,
    route: str | None = None,
    portal: str | None = None,
    since: str | dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> RunFilter:
    """A run filter from what a person typed (empty means any); ``ValueError`` names the field that is wrong."""
    status, kind, route, portal = (value.strip() or None if value else None for value in (status, kind, route, portal))
    if status is not None and status not in STATUSES:
        raise ValueError(f"status: one of {', '.join(STATUSES)}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind: one of {', '.join(KINDS)}")
    if isinstance(since, str):
        since = parse_since(since, now or dt.datetime.now(dt.UTC)) if since.strip() else None
    elif since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    return RunFilter(member_id=portal, status=status, kind=kind, route=route, since=since)


def run_out(run: Run) -> RunOut:
    fields = {name: getattr(run, name) for name in RunOut.model_fields}
    return RunOut(**fields)


def route_portal(ref: PortalRef, key: str | None) -> RoutePortal:
    if ref.endpoint is not None or ref.inbound:
        kind: Literal["endpoint", "inbound"] = "inbound" if ref.inbound else "endpoint"
        return RoutePortal(name=ref.name, kind=kind, address="" if ref.inbound else key or "", plan="", key=key)
    if ref.app is not None:
        return RoutePortal(name=ref.name, kind="app", address=ref.app, plan=ref.plan, key=key)
    parts = urlsplit(ref.webhook or "")
    host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or ""
    return RoutePortal(name=ref.name, kind="webhook", address=host, plan=ref.plan, key=key)


def route_info(route: Route, portals: dict[str, RoutePortal]) -> RouteInfo:
    def portal(name: str) -> RoutePortal:
        # A route names only portals the file declares (the loader checks), so the fallback is never shown.
        return portals.get(name) or RoutePortal(name=name, kind="app", address="", plan="", key=None)

    return RouteInfo(
        name=route.name,
        source=portal(route.source),
        target=portal(route.target),
        triggers=RouteTriggers(
            robot=route.triggers.robot,
            hook=route.triggers.hook_secret is not None,
            event_stages=list(route.triggers.event_stages),
        ),
        deal_fields=list(route.deal),
        contact_match=list(route.contact.match) if route.contact is not None else None,
        company_match=list(route.company.match) if route.company is not None else None,
        products=route.products,
        status_back_stages=dict(route.status_back.stages) if route.status_back is not None else {},
    )


class AdminService:
    def __init__(
        self,
        portals: PortalRegistry,
        runs: RunLog,
        routes: RouteFile,
        robot_sync: RobotSync,
        connections: Connections,
        limiter: Limiter,
        replay: Replay,
    ) -> None:
        self._portals = portals
        self._runs = runs
        self._routes = routes
        self._robot_sync = robot_sync
        self._connections = connections
        self._limiter = limiter
        self._replay = replay

    # --- portals ---------------------------------------------------------------------------------------------------

    async def portals(self) -> list[PortalHealth]:
        robots = await self._robot_sync.registered()
        standings = await self._portals.standings()
        return [await self._health(standing, robots.get(standing.record.member_id, [])) for standing in standings]

    async def portal(self, member_id: str) -> PortalDetail | None:
        found = next((p for p in await self.portals() if p.member_id == member_id), None)
        if found is None:
            return None
        history = [PortalEvent(**event) for event in await self._portals.history(member_id)]
        return PortalDetail(**found.model_dump(), history=history)

    async def _health(self, standing: PortalStanding, robots: list[str]) -> PortalHealth:
        record, limits = standing.record, standing.record.limits
        in_use = 0
        if record.status == "active":
            in_use = round(await self._limiter.fullness(record.member_id, limits) * limits.capacity)
        return PortalHealth(
            member_id=record.member_id,
            domain=record.domain,
            status=record.status,
            scope=record.scope,
            app_version=record.app_version,
            tokens=standing.has_tokens,
            token_expires_at=standing.token_expires_at,
            limits=LimitsInUse(
                burst=limits.burst, drain=limits.drain, operating_limit=limits.operating_limit, in_use=in_use
            ),
            robots=robots,
            installed_at=standing.installed_at,
            updated_at=standing.updated_at,
            uninstalled_at=standing.uninstalled_at,
        )

    # --- routes ----------------------------------------------------------------------------------------------------

    async def routes(self) -> list[RouteInfo]:
        portals = await self._route_portals()
        return [route_info(route, portals) for route in self._routes.routes.values()]

    async def _route_portals(self) -> dict[str, RoutePortal]:
        return {name: route_portal(ref, await self._connections.key(ref)) for name, ref in self._routes.portals.items()}

    def routes_path(self) -> str:
        return self._routes.path

    async def portal_names(self) -> list[str]:
        """What runs name their portal by: installed portals' member_ids, the route file's webhook portals' hosts."""
        installed = {portal.member_id for portal in await self._portals.list_portals()}
        keys = {portal.key for portal in (await self._route_portals()).values() if portal.key is not None}
        return sorted(installed | keys)

    # --- runs ------------------------------------------------------------------------------------------------------

    async def runs(self, where: RunFilter, limit: int = 50) -> list[RunOut]:
        return [run_out(run) for run in await self._runs.list_runs(where, limit)]

    async def runs_by_id(self, run_ids: list[int]) -> list[RunOut]:
        found = [await self._runs.get(run_id) for run_id in run_ids]
        return [run_out(run) for run in found if run is not None]

    async def counts(self, where: RunFilter) -> dict[str, int]:
        """Runs per status among those ``where`` selects, whatever status it asks for (the counts are the choice)."""
        return await self._runs.count_by_status(RunFilter(**{**asdict(where), "status": None}))

    async def run(self, run_id: int) -> RunDetail | None:
        found = await self._runs.show(run_id)
        if found is None:
            return None
        run, calls = found
        return RunDetail(
            **run_out(run).model_dump(),
            inputs=run.inputs,
            outcome=run.outcome,
            calls=[RunCallOut(**{name: getattr(call, name) for name in RunCallOut.model_fields}) for call in calls],
        )

    async def replay(self, run_ids: list[int]) -> ReplayResult:
        """Dead runs back in (robots answered again, deliveries delivered again); others are left alone."""
        wanted = list(dict.fromkeys(run_ids))
        replayed: list[int] = []
        for start in range(0, len(wanted), REPLAY_CHUNK):
            replayed += await self._replay(wanted[start : start + REPLAY_CHUNK])
        return ReplayResult(replayed=replayed, not_dead=sorted(set(wanted) - set(replayed)))

    async def replay_dead(self, where: RunFilter) -> ReplayResult:
        """Every dead run ``where`` selects (its status is taken as dead), oldest first."""
        dead = await self._runs.list_runs(RunFilter(**{**asdict(where), "status": "dead"}), MAX_REPLAYED_AT_ONCE)
        return await self.replay(sorted(run.id for run in dead))

    # --- robots ----------------------------------------------------------------------------------------------------

    async def sync_robots(self, member_id: str | None = None) -> list[SyncResult]:
        """Register the declared robots in one portal or every active one; a failing portal is reported."""
        return [SyncResult(**asdict(report)) for report in await self._robot_sync.sync_all(member_id)]
