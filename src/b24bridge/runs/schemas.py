"""What a run and its outbound calls look like to the rest of the service and to the CLI."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "uncertain")
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "uncertain"})


@dataclass(frozen=True)
class Run:
    id: int
    member_id: str
    robot_code: str
    workflow_id: str
    event_token: str
    document_id: list[str]
    inputs: dict[str, Any]
    status: str
    outcome: dict[str, Any] | None
    error: str | None
    attempts: int
    answered_at: dt.datetime | None
    deadline_at: dt.datetime | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class RunCall:
    id: int
    run_id: int
    method: str
    status: str
    duration: float
    error: str | None
    at: dt.datetime


@dataclass(frozen=True)
class NewRun:
    member_id: str
    robot_code: str
    workflow_id: str
    event_token: str
    document_id: list[str]
    inputs: dict[str, Any]
    status: str = "queued"
    error: str | None = None
    deadline_at: dt.datetime | None = None
