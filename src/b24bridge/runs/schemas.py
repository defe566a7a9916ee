"""What a run and its outbound calls look like to the rest of the service and to the CLI."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "uncertain", "dead")
# The work's outcome is decided (what is left is answering); ``dead`` is given up altogether.
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "uncertain", "dead"})


@dataclass(frozen=True)
class Revived:
    """A dead run taken back in (what its domain needs to queue it again)."""

    id: int
    kind: str
    member_id: str
    inputs: dict[str, Any]
    document_id: list[str]


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing (or a replay) is about; None means any."""

    member_id: str | None = None
    status: str | None = None
    kind: str | None = None
    route: str | None = None
    since: dt.datetime | None = None


@dataclass(frozen=True)
class RetrySchedule:
    """Pauses between a run's attempts (``B24BRIDGE_RETRY_SCHEDULE``): the one notion of "how many attempts".

    Attempt n (counted from 1) that fails for a temporary reason is tried again after ``delays[n-1]`` with
    +-10 % jitter; after the last pause the run is given up (dead).
    """

    delays: tuple[float, ...]

    def pause_after(self, attempt: int, jitter: float = 0.0) -> float | None:
        """How long to wait before the next attempt, or None when the schedule is spent; ``jitter`` in [-1, 1]."""
        if attempt < 1 or attempt > len(self.delays):
            return None
        return self.delays[attempt - 1] * (1.0 + 0.1 * jitter)

    @property
    def horizon(self) -> float:
        return sum(self.delays)


KINDS: tuple[str, ...] = ("robot", "bridge")


@dataclass(frozen=True)
class Run:
    """One unit of work in the run log: a robot call, or a bridge delivery (``kind``).

    ``member_id`` names the portal the run came from (a bridge's source portal key); ``workflow_id`` and
    ``event_token`` are set when a workflow waits for the run's answer.
    """

    id: int
    kind: str
    member_id: str
    robot_code: str | None
    route: str | None
    trigger: str | None
    workflow_id: str | None
    event_token: str | None
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
    document_id: list[str]
    inputs: dict[str, Any]
    kind: str = "robot"
    robot_code: str | None = None
    route: str | None = None
    trigger: str | None = None
    workflow_id: str | None = None
    event_token: str | None = None
    status: str = "queued"
    error: str | None = None
    deadline_at: dt.datetime | None = None
