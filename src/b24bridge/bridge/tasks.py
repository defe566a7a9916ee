"""The bridge's job: one task runs a bridge run (a delivery, or a status coming back), with the runs of one deal
one at a time and in order (``lock=deal:<portal>:<id>``). Its runner comes from the job context."""

from __future__ import annotations

from typing import Any, cast

import procrastinate
from psycopg import AsyncConnection

from b24bridge.runs.retry import AsTheRunSays, guarded

from .runner import BridgeRunner

NAMESPACE = "bridge"
RUN_TASK = f"{NAMESPACE}:run"
RUNNER = "bridge.runner"


async def defer_run(
    jobs: procrastinate.App,
    conn: AsyncConnection[Any],
    run_id: int,
    *,
    lock: str,
    queueing_lock: str | None = None,
) -> bool:
    """Queue the run's job on ``conn`` (inside the caller's transaction); False if one with the same queueing lock
    is already waiting."""
    task = jobs.configure_task(RUN_TASK, lock=lock, queueing_lock=queueing_lock, connection=conn)
    try:
        await task.defer_async(run_id=run_id)
    except procrastinate.exceptions.AlreadyEnqueued:
        return False
    return True


async def run(context: procrastinate.JobContext, run_id: int) -> None:
    await guarded(cast(BridgeRunner, context.additional_context[RUNNER]).execute, run_id)


def build_blueprint() -> procrastinate.Blueprint:
    """A new blueprint for each procrastinate App (adding one to an App binds its tasks in place)."""
    blueprint = procrastinate.Blueprint()
    blueprint.task(name="run", retry=AsTheRunSays(), pass_context=True)(run)
    return blueprint
