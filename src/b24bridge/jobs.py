"""The job engine: one procrastinate App carrying every domain's tasks, and a worker that outlives outages.

procrastinate's worker stops for good when one of its side tasks fails (the LISTEN connection dropped because the
database went away, say) or when fetching a job raises. :class:`SupervisedWorker` starts it again with a growing
pause until it runs, so a database outage delays jobs instead of ending them; ``/readyz`` reports a worker that is
not running.

A worker killed mid-run (kill -9, OOM, a lost node) leaves its jobs in ``doing`` forever as far as procrastinate is
concerned. Workers send heartbeats (``WORKER_DEFAULTS``); ``engine:retry_stalled`` runs every few seconds in
whichever worker is alive and hands the jobs of workers silent for longer than ``STALLED_AFTER`` back to the queue.
The re-run is safe: it counts as a repeat, so it first looks for what the dead attempt wrote (ORIGIN_ID, the bridge's
id map) instead of writing it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import procrastinate

from b24bridge import lanes
from b24bridge.bridge import tasks as bridge_tasks
from b24bridge.db import Database
from b24bridge.observability import get_logger
from b24bridge.robots import tasks as robot_tasks

log = get_logger(__name__)

# Heartbeats every 2 s; a worker silent for 10 s is dead: frequent enough to re-run a killed worker's robot well
# within a typical robot timeout, cheap enough (one UPDATE per worker every 2 s). On shutdown (SIGTERM, a deploy)
# running jobs get a few seconds to finish; the rest are cancelled and retried, so a stopping process neither hangs
# on jobs waiting for a portal's limits nor loses them. A job retried after a pause is not announced when it falls
# due: workers find it by polling, every second.
WORKER_DEFAULTS: dict[str, float] = {
    "fetch_job_polling_interval": 1.0,
    "update_heartbeat_interval": 2.0,
    "stalled_worker_timeout": 10.0,
    "shutdown_graceful_timeout": 5.0,
}
STALLED_AFTER = 10.0

# Restart pauses after a worker stopped by itself: quick at first, at most half a minute.
RESTART_FIRST = 0.5
RESTART_MAX = 30.0


async def retry_stalled(context: procrastinate.JobContext, timestamp: int) -> None:
    manager = context.app.job_manager
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_AFTER):
        log.warning("jobs.stalled_job_retried", job_id=job.id, task=job.task_name, run_id=job.task_kwargs.get("run_id"))
        await manager.retry_job(job)


def _engine_blueprint() -> procrastinate.Blueprint:
    blueprint = procrastinate.Blueprint()
    blueprint.periodic(cron="* * * * * */5")(
        blueprint.task(name="retry_stalled", queueing_lock="engine:retry_stalled", pass_context=True)(retry_stalled)
    )
    return blueprint


def build_app(
    database: Database,
    lane_slots: int = lanes.DEFAULT_LANE_SLOTS,
    workers: Callable[[], int] = lambda: 1,
    backlog: lanes.LaneBacklog | None = None,
) -> procrastinate.App:
    """The App with every domain's tasks, under its namespace, fetching jobs by lanes (:mod:`b24bridge.lanes`) and
    counting each lane's jobs into ``backlog``; opened by the caller."""
    app = database.procrastinate_app(worker_defaults=dict(WORKER_DEFAULTS))
    app.job_manager = lanes.LaneJobManager(app.connector, lane_slots, workers=workers, backlog=backlog)
    app.add_tasks_from(_engine_blueprint(), namespace="engine")
    app.add_tasks_from(robot_tasks.build_blueprint(), namespace=robot_tasks.NAMESPACE)
    app.add_tasks_from(bridge_tasks.build_blueprint(), namespace=bridge_tasks.NAMESPACE)
    return app


class SupervisedWorker:
    def __init__(self, app: procrastinate.App, *, concurrency: int, name: str, context: Mapping[str, Any]) -> None:
        self.app = app
        self.concurrency = concurrency
        self.name = name
        self.context = dict(context)
        self.running = False
        self.restarts = 0
        self.last_error: str | None = None
        self.stopped_at: float | None = None

    async def run(self) -> None:
        """Run the worker until cancelled, starting it again whenever it stops by itself."""
        pause = RESTART_FIRST
        while True:
            started = time.monotonic()
            self.running = True
            try:
                await self.app.run_worker_async(
                    concurrency=self.concurrency,
                    name=self.name,
                    install_signal_handlers=False,
                    additional_context=self.context,
                )
                self.last_error = "the worker stopped (a side task failed)"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.running = False
                self.stopped_at = time.time()
                await self._give_back()
            if time.monotonic() - started > 60:
                pause = RESTART_FIRST  # it ran for a while: this is a new outage, not the same one
            self.restarts += 1
            log.error("job worker stopped; starting it again", worker=self.name, error=self.last_error, pause=pause)
            await asyncio.sleep(pause)
            pause = min(RESTART_MAX, pause * 2)

    async def _give_back(self) -> None:
        manager = self.app.job_manager
        if isinstance(manager, lanes.LaneJobManager):
            try:
                await asyncio.shield(manager.give_back())
            except Exception as exc:  # the database is away: they are the stalled jobs of this worker, retried later
                log.warning("jobs taken could not be given back", worker=self.name, error=type(exc).__name__)

    def health(self) -> str | None:
        """None while running (or about to start); otherwise why not, for ``/readyz``."""
        if self.running or self.stopped_at is None:
            return None
        return f"job worker {self.name!r} is not running ({self.last_error or 'not started'})"
