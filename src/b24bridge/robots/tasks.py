"""The job that runs a robot call.

``robots:run`` runs one robot call. Its job is deferred with ``lock=run:<id>`` so one run never executes twice at
once (procrastinate runs jobs sharing a lock one after another), and tried again only when the runner raises
``RetryRun`` (a temporary failure, on the run's retry schedule) or the attempt was interrupted (see
:func:`b24bridge.runs.retry.guarded`). The runner comes from the job context (``additional_context``), which the
composition root fills.
"""

from __future__ import annotations

from typing import Any, cast

import procrastinate
from psycopg import AsyncConnection

from b24bridge.runs.retry import AsTheRunSays, guarded

from .runner import RobotRunner

NAMESPACE = "robots"
RUN_TASK = f"{NAMESPACE}:run"
# The key under which the worker's job context carries the RobotRunner.
RUNNER = "robots.runner"


async def defer_run(jobs: procrastinate.App, conn: AsyncConnection[Any], run_id: int) -> None:
    """Queue the run's job on ``conn``, inside the caller's transaction."""
    lock = f"run:{run_id}"
    await jobs.configure_task(RUN_TASK, lock=lock, queueing_lock=lock, connection=conn).defer_async(run_id=run_id)


async def run(context: procrastinate.JobContext, run_id: int) -> None:
    await guarded(cast(RobotRunner, context.additional_context[RUNNER]).execute, run_id)


def build_blueprint() -> procrastinate.Blueprint:
    """A new blueprint for each procrastinate App: adding one to an App renames and binds its tasks in place,
    so a shared blueprint would break the second service context of a process (tests, embedding callers)."""
    blueprint = procrastinate.Blueprint()
    blueprint.task(name="run", retry=AsTheRunSays(), pass_context=True)(run)
    return blueprint
