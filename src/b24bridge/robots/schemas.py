"""Results of the robots domain: how a robot call was answered, what a sync did."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CallAnswer:
    """The HTTP answer to a robot call: the portal only looks at the status code."""

    http_status: int
    detail: str
    run_id: int | None = None
    spooled: bool = False  # kept in the local spool: stored once the database takes it (its run id comes then)


@dataclass
class SyncReport:
    member_id: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class RobotState:
    """One robot in one portal, for ``b24bridge robots list``."""

    member_id: str
    code: str
    declared: bool
    registered: bool
    current: bool  # registered with the definition declared now
