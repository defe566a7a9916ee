"""What the admin API answers and accepts (documented at ``/docs``); the admin page renders the same values."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from b24bridge.runs.schemas import KINDS, STATUSES
from b24bridge.safetext import StoredText

RunStatus = Literal["queued", "running", "succeeded", "failed", "uncertain", "dead"]
RunKind = Literal["robot", "bridge"]
# Spelled out for the schema; kept equal to the run log's own lists.
assert set(get_args(RunStatus)) == set(STATUSES) and set(get_args(RunKind)) == set(KINDS)

MAX_REPLAY_IDS = 1000
MAX_RUN_ID = 2**63 - 1  # runs.id is a bigserial
RunId = Annotated[int, Field(ge=1, le=MAX_RUN_ID)]


class LimitsInUse(BaseModel):
    burst: int = Field(description="requests the portal allows at once (its leaky bucket)")
    drain: float = Field(description="requests per second the bucket drains")
    operating_limit: float = Field(description="seconds of server time each method may use per 10 minutes")
    in_use: int = Field(
        description="requests of the burst in use now, as this process's limiter sees it (all processes' with Redis)"
    )


class PortalHealth(BaseModel):
    member_id: str
    domain: str
    status: str = Field(description="active, uninstalled or auth_lost")
    scope: str
    app_version: int | None
    tokens: bool = Field(description="whether b24bridge holds tokens for the portal (never shown)")
    token_expires_at: datetime | None = Field(description="when the access token expires (it is refreshed on use)")
    limits: LimitsInUse
    robots: list[str] = Field(description="robot codes registered in the portal at the last sync")
    installed_at: datetime
    updated_at: datetime
    uninstalled_at: datetime | None


class PortalEvent(BaseModel):
    kind: str
    at: datetime
    detail: dict[str, Any]


class PortalDetail(PortalHealth):
    history: list[PortalEvent] = Field(description="the latest events, newest first")


class RoutePortal(BaseModel):
    name: str = Field(description="the portal's key in the route file")
    kind: Literal["app", "webhook", "endpoint", "inbound"]
    address: str = Field(
        description="an installed portal's domain or member_id; a webhook's host (never its code); an endpoint's URL"
        " without its query"
    )
    plan: str
    key: str | None = Field(description="what runs name this portal by (their member_id); none: not installed yet")


class RouteTriggers(BaseModel):
    robot: bool
    hook: bool
    event_stages: list[str]


class RouteInfo(BaseModel):
    name: str
    source: RoutePortal
    target: RoutePortal
    triggers: RouteTriggers
    deal_fields: list[str]
    contact_match: list[str] | None
    company_match: list[str] | None
    products: bool
    status_back_stages: dict[str, str]


class RunOut(BaseModel):
    id: int
    kind: str
    member_id: str = Field(description="the portal the run came from (a bridge run: its source's key, see /api/routes)")
    robot_code: str | None
    route: str | None
    trigger: str | None
    workflow_id: str | None
    document_id: list[str]
    status: str
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    answered_at: datetime | None
    deadline_at: datetime | None


class RunCallOut(BaseModel):
    method: str
    status: str
    duration: float = Field(description="seconds")
    error: str | None
    at: datetime


class RunDetail(RunOut):
    inputs: dict[str, Any] = Field(description="what the run was given (never tokens)")
    outcome: dict[str, Any] | None
    calls: list[RunCallOut] = Field(description="every outbound call, in order")


class ReplayRequest(BaseModel):
    """Either ``run_ids``, or ``status: dead`` with optional filters (every dead run matching them)."""

    model_config = ConfigDict(extra="forbid")

    run_ids: list[RunId] | None = Field(default=None, min_length=1, max_length=MAX_REPLAY_IDS)
    status: Literal["dead"] | None = None
    route: StoredText | None = Field(default=None, max_length=200)
    portal: StoredText | None = Field(default=None, max_length=200, description="member_id, or a route file portal key")
    kind: RunKind | None = None
    since: datetime | None = Field(default=None, description="created at or after (ISO 8601; no zone: UTC)")

    @model_validator(mode="after")
    def _one_way(self) -> ReplayRequest:
        filtered = any(value is not None for value in (self.route, self.portal, self.kind, self.since))
        if (self.run_ids is None) == (self.status is None):
            raise ValueError("give run_ids, or status: dead (with route, portal, kind, since to narrow it)")
        if self.run_ids is not None and filtered:
            raise ValueError("route, portal, kind and since narrow status: dead, not run_ids")
        return self


class ReplayResult(BaseModel):
    replayed: list[int] = Field(description="runs taken back in (each with a new job)")
    not_dead: list[int] = Field(description="runs asked for that were not dead: left alone")


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    portal: StoredText | None = Field(
        default=None, max_length=64, description="one portal's member_id; none: every active"
    )


class SyncResult(BaseModel):
    member_id: str
    added: list[str]
    updated: list[str]
    deleted: list[str]
    unchanged: list[str]
    error: str | None
