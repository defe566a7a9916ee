"""The job that runs a robot call.

``robots:run`` runs one robot call. Its job is deferred into its portal's lane (:mod:`b24bridge.lanes`) with
``lock=run:<id>`` so one run never executes twice at once (procrastinate runs jobs sharing a lock one after another),
and tried again only when the runner raises ``RetryRun`` (a temporary failure, on the run's retry schedule) or the
attempt was interrupted (see :func:`b24bridge.runs.retry.guarded`). The runner comes from the job context
(``additional_context``), which the composition root fills.
"""

from __future__ import annotations

from typing import cast

import procrastinate

from b24bridge import lanes
from b24bridge.intake.schemas import RUN_ID, Submission
from b24bridge.portals.schemas import Check
from b24bridge.runs.retry import AsTheRunSays, guarded
from b24bridge.runs.schemas import NewRun

from .runner import RobotRunner

NAMESPACE = "robots"
RUN_TASK = f"{NAMESPACE}:run"
# The key under which the worker's job context carries the RobotRunner.
RUNNER = "robots.runner"
RUN_LOCK = f"run:{RUN_ID}"


def submission(run: NewRun, check: Check | None = None) -> Submission:
    """An accepted robot call for the intake: its job in its portal's lane, under the run's own lock."""
    return Submission(run, RUN_TASK, run.member_id, lock=RUN_LOCK, queueing_lock=RUN_LOCK, check=check)


def job(run_id: int, member_id: str) -> lanes.Job:
    """The job of an existing run (a replay), as :func:`submission` queues it."""
    lock = RUN_LOCK.replace(RUN_ID, str(run_id))
    return lanes.Job(RUN_TASK, run_id, lanes.lane(member_id), lock=lock, queueing_lock=lock)


async def run(context: procrastinate.JobContext, run_id: int) -> None:
    await guarded(cast(RobotRunner, context.additional_context[RUNNER]).execute, run_id)


def build_blueprint() -> procrastinate.Blueprint:
    """A new blueprint for each procrastinate App: adding one to an App renames and binds its tasks in place,
    so a shared blueprint would break the second service context of a process (tests, embedding callers)."""
    blueprint = procrastinate.Blueprint()
    blueprint.task(name="run", retry=AsTheRunSays(), pass_context=True)(run)
    return blueprint
