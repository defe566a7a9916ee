"""The bridge's job: one task runs a bridge run (a delivery, or a status coming back), with the runs of one deal
one at a time and in order (``lock=deal:<portal>:<id>``). Its runner comes from the job context."""

from __future__ import annotations

from typing import cast

import procrastinate

from b24bridge import lanes
from b24bridge.intake.schemas import Submission
from b24bridge.portals.schemas import Check
from b24bridge.runs.retry import AsTheRunSays, guarded
from b24bridge.runs.schemas import NewRun

from .runner import BridgeRunner

NAMESPACE = "bridge"
RUN_TASK = f"{NAMESPACE}:run"
RUNNER = "bridge.runner"


def submission(run: NewRun, *, lock: str, queueing_lock: str | None = None, check: Check | None = None) -> Submission:
    """A bridge trigger for the intake: its job in the lane of the portal it came from (``run.member_id``)."""
    return Submission(run, RUN_TASK, run.member_id, lock=lock, queueing_lock=queueing_lock, check=check)


def job(run_id: int, portal_key: str, *, lock: str) -> lanes.Job:
    """The job of an existing run (a replay), in the lane :func:`submission` would have used."""
    return lanes.Job(RUN_TASK, run_id, lanes.lane(portal_key), lock=lock)


async def run(context: procrastinate.JobContext, run_id: int) -> None:
    await guarded(cast(BridgeRunner, context.additional_context[RUNNER]).execute, run_id)


def build_blueprint() -> procrastinate.Blueprint:
    """A new blueprint for each procrastinate App (adding one to an App binds its tasks in place)."""
    blueprint = procrastinate.Blueprint()
    blueprint.task(name="run", retry=AsTheRunSays(), pass_context=True)(run)
    return blueprint
