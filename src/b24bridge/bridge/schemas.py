"""What the bridge passes around: trigger kinds, answers to the door, outcomes of a delivery, its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The bridge robot: placed on a deal stage in a source portal; its property names the route.
ROBOT_CODE = "b24bridge_bridge_deal"
# How a delivery was asked for: the bridge robot, the source's outbound-webhook rule, a CRM event, the target's
# status coming back, or an operator's replay.
TRIGGERS = ("robot", "hook", "event", "status", "replay")
ORIGINATOR_ID = "b24bridge"


class BridgeConfigError(Exception):
    """The route or its portals cannot work as configured (unknown route, portal not installed): a permanent
    failure, the run is dead with this message."""


class Busy(Exception):
    """Another process is creating a record this delivery needs: try again shortly (a temporary failure)."""


@dataclass(frozen=True)
class Accepted:
    """The door's answer to a trigger: the HTTP status and a short detail (never a secret)."""

    http_status: int
    detail: str
    run_id: int | None = None
    spooled: bool = False  # kept in the local spool, stored (and given its run id) once the database takes it


@dataclass
class DeliveryResult:
    """What a delivery did in the target (kept as the run's outcome)."""

    target_deal_id: int | None
    target_deal_url: str | None
    action: str  # created, updated, unchanged, skipped
    changed: list[str] = field(default_factory=list)
    contact_id: int | None = None
    company_id: int | None = None
    note: str = ""
    target_ref: str | None = None  # the record's id in your own system (a route to an HTTPS endpoint)
    answer: dict[str, Any] | None = None  # that endpoint's JSON answer, for status_back (not kept in the run)

    def values(self) -> dict[str, Any]:
        """The robot's return values (``RETURN_PROPERTIES`` of the bridge robot)."""
        return {"target_deal_id": self.target_deal_id or 0, "target_deal_url": self.target_deal_url or ""}


class InboundRecord(BaseModel):
    """The body of ``POST /api/inbound/{route}``: a record your system hands to a portal."""

    model_config = ConfigDict(extra="forbid")

    record: dict[str, Any] = Field(description="the record's fields, as the route's rules read them (record.title)")
    id: str | int | None = Field(
        default=None,
        description="your system's id of the record: a later POST with the same id updates the record it created",
    )
    contact: dict[str, Any] | None = Field(default=None, description="its contact, for the route's contact rules")
    company: dict[str, Any] | None = Field(default=None, description="its company, for the route's company rules")
    products: list[dict[str, Any]] | None = Field(default=None, description="its product rows")
