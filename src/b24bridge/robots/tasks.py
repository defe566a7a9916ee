"""Jobs that run robot calls, and the sweeper that gives the runs of a dead worker to a live one.

``robots:run`` runs one robot call. Its job is deferred with ``lock=run:<id>`` so one run never executes twice at
once (procrastinate runs jobs sharing a lock one after another), and retried with exponential backoff only when
the runner raises ``RetryRun`` (a retryable or uncertain portal error); permanent errors end the run at once.

A worker killed mid-run (kill -9, OOM, a lost node) leaves its job in ``doing`` forever as far as procrastinate is
concerned. Workers send heartbeats (``WORKER_DEFAULTS``); ``robots:retry_stalled`` runs every few seconds in
whichever worker is alive and hands jobs of workers silent for longer than ``STALLED_AFTER`` back to the queue.
The re-run is safe: the run counts as repeated, so the robot first looks for what the dead attempt wrote
(ORIGIN_ID) instead of writing it again.

Tasks get the service they need from the job context (``additional_context``), filled by the composition root.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, cast

import procrastinate
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import PoolTimeout

from b24bridge.observability import get_logger

from .runner import RobotRunner
from .schemas import RetryRun

log = get_logger(__name__)

NAMESPACE = "robots"
RUN_TASK = f"{NAMESPACE}:run"
# The key under which the worker's job context carries the RobotRunner.
RUNNER = "robots.runner"

# Heartbeats every 2 s; a worker silent for 10 s is dead. Frequent enough to re-run a killed worker's robot
# well within a typical robot timeout, cheap enough (one UPDATE per worker every 2 s).
# On shutdown (SIGTERM, a deploy) running jobs get a few seconds to finish; the rest are cancelled and retried
# (see ``_RETRY``), so a stopping process neither hangs on jobs waiting for the portal's limits nor loses them.
# A job retried after a pause is not announced when it falls due: workers find it by polling, every second.
WORKER_DEFAULTS: dict[str, float] = {
    "fetch_job_polling_interval": 1.0,
    "update_heartbeat_interval": 2.0,
    "stalled_worker_timeout": 10.0,
    "shutdown_graceful_timeout": 5.0,
}
STALLED_AFTER = 10.0
# A run interrupted by the database going away tries again after this long.
DATABASE_PAUSE = 2.0


class _AsTheRunSays(procrastinate.BaseRetryStrategy):
    """Retry exactly when and as the runner says (``RetryRun.pause``): the run's retry schedule decides how many
    attempts there are and how far apart, so the job engine keeps no second count of its own."""

    def get_retry_decision(
        self, *, exception: BaseException, job: procrastinate.jobs.Job
    ) -> procrastinate.RetryDecision | None:
        if isinstance(exception, RetryRun):
            pause = dt.timedelta(seconds=max(0.0, exception.pause))
            return procrastinate.RetryDecision(retry_at=dt.datetime.now(dt.UTC) + pause)
        return None


async def defer_run(jobs: procrastinate.App, conn: AsyncConnection[Any], run_id: int) -> None:
    """Queue the run's job on ``conn``, inside the caller's transaction."""
    lock = f"run:{run_id}"
    await jobs.configure_task(RUN_TASK, lock=lock, queueing_lock=lock, connection=conn).defer_async(run_id=run_id)


async def run(context: procrastinate.JobContext, run_id: int) -> None:
    runner = cast(RobotRunner, context.additional_context[RUNNER])
    try:
        await runner.execute(run_id)
    except (psycopg.Error, PoolTimeout, procrastinate.exceptions.ConnectorException) as exc:
        # The run log could not be written (the database went away mid-run): run again once it is back. The re-run
        # finds what this attempt did (ORIGIN_ID, an answer the workflow already has is ignored), nothing twice.
        log.warning("robots.run_database_error", run_id=run_id, error=type(exc).__name__)
        raise RetryRun(f"database unavailable ({type(exc).__name__})", pause=DATABASE_PAUSE) from None
    except asyncio.CancelledError:
        # Cut short by the worker's shutdown: back to the queue. The re-run finds what this attempt wrote
        # (ORIGIN_ID), so nothing is done twice.
        log.info("robots.run_interrupted", run_id=run_id)
        raise RetryRun("worker shut down during the run", pause=0.0) from None


async def retry_stalled(context: procrastinate.JobContext, timestamp: int) -> None:
    manager = context.app.job_manager
    for job in await manager.get_stalled_jobs(task_name=RUN_TASK, seconds_since_heartbeat=STALLED_AFTER):
        log.warning("robots.stalled_job_retried", job_id=job.id, run_id=job.task_kwargs.get("run_id"))
        await manager.retry_job(job)


def build_blueprint() -> procrastinate.Blueprint:
    """A new blueprint for each procrastinate App: adding one to an App renames and binds its tasks in place,
    so a shared blueprint would break the second service context of a process (tests, embedding callers)."""
    blueprint = procrastinate.Blueprint()
    blueprint.task(name="run", retry=_AsTheRunSays(), pass_context=True)(run)
    blueprint.periodic(cron="* * * * * */5")(
        blueprint.task(name="retry_stalled", queueing_lock="robots:retry_stalled", pass_context=True)(retry_stalled)
    )
    return blueprint
