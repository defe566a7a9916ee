"""What the intake takes and what it answers."""

from __future__ import annotations

import datetime as dt
import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from b24bridge.portals.schemas import Check
from b24bridge.runs.schemas import NewRun

# Stands for the new run's id in a submission's lock and queueing lock (``run:{run_id}``).
RUN_ID = "{run_id}"

Outcome = Literal["accepted", "duplicate", "coalesced", "spooled", "refused"]


_PREFIX = os.urandom(8).hex()
_counter = itertools.count()


def new_intake_key() -> str:
    """Unique across processes and restarts (a random prefix per process) and cheap (a counter behind it)."""
    return f"{_PREFIX}{next(_counter):x}"


@dataclass(frozen=True)
class Submission:
    """An accepted call: its run, and the job that will do the run's work.

    ``lane_key`` is the portal whose lane the job goes into; ``lock`` and ``queueing_lock`` are procrastinate's
    (jobs sharing a lock run one at a time, in order; one job per queueing lock waits at a time: a second one
    coalesces and its run is not kept); :data:`RUN_ID` in either stands for the new run's id. ``intake_key``
    identifies the call from its first attempt to be stored to its last, so that a call stored twice (once by a
    commit whose answer was lost, once from the spool) is one run.
    """

    run: NewRun
    task: str
    lane_key: str
    lock: str | None = None
    queueing_lock: str | None = None
    intake_key: str = field(default_factory=new_intake_key)
    check: Check | None = None

    def to_json(self) -> dict[str, Any]:
        run = self.run
        return {
            "run": {**run.__dict__, "deadline_at": run.deadline_at.isoformat() if run.deadline_at else None},
            "task": self.task,
            "lane_key": self.lane_key,
            "lock": self.lock,
            "queueing_lock": self.queueing_lock,
            "intake_key": self.intake_key,
            "check": None if self.check is None else self.check.__dict__,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Submission:
        run = dict(data["run"])
        if run.get("deadline_at"):
            run["deadline_at"] = dt.datetime.fromisoformat(run["deadline_at"])
        check = data.get("check")
        return cls(
            run=NewRun(**run),
            task=data["task"],
            lane_key=data["lane_key"],
            lock=data.get("lock"),
            queueing_lock=data.get("queueing_lock"),
            intake_key=data["intake_key"],
            check=Check(**check) if check else None,
        )


@dataclass(frozen=True)
class Stored:
    """What became of a submission: ``accepted`` (a new run, ``run_id``), ``duplicate`` (the same call was stored
    before), ``coalesced`` (a job of the same record was already waiting: nothing kept), ``spooled`` (kept on local
    disk until the database takes it), ``refused`` (a spooled call whose portal proved not to be the one it said)."""

    outcome: Outcome
    run_id: int | None = None
