"""The job queue's lanes: one per portal, so that one portal's flood never stalls the others.

procrastinate takes jobs first in, first out, and a job waiting for its portal's limiter holds a worker slot while it
waits: 5,000 robot calls from one portal would fill every slot with jobs that can only go at that portal's two
requests a second, and every other portal's calls would wait behind them for minutes. So every job of b24bridge's
runs is deferred into its portal's lane (procrastinate's ``queue_name``: ``p:<portal key>``), and workers fetch with
``b24bridge_fetch_job`` (migration 0008) instead of procrastinate's own query: a lane already running
``lane_slots`` jobs gets no more, and among the others the lane with the fewest running jobs goes first. A portal
therefore holds at most the slots its limits can use, and a quiet portal's job is the next one taken.

Jobs are deferred here in bulk on the caller's connection (:func:`defer`), inside the caller's transaction: one
statement for a whole group of accepted calls (the door's group commit), where procrastinate's own ``defer`` is a
round trip per job. A job with a queueing lock that is already waiting is left out, not an error, so one coalesced
trigger never fails the others of its group.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import procrastinate
from procrastinate import jobs as procrastinate_jobs
from procrastinate import manager
from psycopg import AsyncConnection

__all__ = ["DEFAULT_LANE_SLOTS", "Job", "LaneJobManager", "defer", "lane"]

# Jobs of one portal running at once, per live worker. A cloud portal drains two requests of up to 50 commands a
# second and a robot run is two commands: 100 running jobs fill the batch that is going and the next one, and the
# burst is used up within a few seconds (bench/tenants.py). More would wait for the limiter in a slot; fewer would
# leave the burst unused.
DEFAULT_LANE_SLOTS = 100
_MAX_QUEUE_NAME = 128  # procrastinate_jobs.queue_name is varchar(128)

_FETCH = (
    "SELECT id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, queue_name, attempts, worker_id"
    " FROM b24bridge_fetch_jobs(%(queues)s::varchar[], %(worker_id)s, %(lane_slots)s, %(max_jobs)s)"
)
_RELEASE = (
    "UPDATE procrastinate_jobs SET status = 'todo', worker_id = NULL WHERE id = ANY(%(ids)s) AND status = 'doing'"
)
# Jobs taken per query. procrastinate's worker asks for one job whenever a slot is free, a query each: with the event
# loop busy serving requests, that loop started ~50 jobs a second whatever the slots (bench/tenants.py: a job waited
# 100 ms on average to start with 50 portals at one call a second). Taken a few at a time, the rest wait in memory
# for the next free slots; they are the worker's ("doing") meanwhile, and go back to the queue when it stops.
PREFETCH = 10


def lane(portal_key: str) -> str:
    """The queue name of a portal's lane (a long key, such as a webhook portal's host, is shortened by a hash)."""
    name = f"p:{portal_key}"
    if len(name) <= _MAX_QUEUE_NAME:
        return name
    return f"p:{portal_key[:80]}#{hashlib.sha256(portal_key.encode()).hexdigest()[:32]}"


@dataclass(frozen=True)
class Job:
    """A run's job to defer: ``task`` (``robots:run``) called with ``run_id``, in ``queue`` (a lane), under
    procrastinate's ``lock`` (jobs sharing it run one at a time, in order) and ``queueing_lock`` (one waiting at a
    time)."""

    task: str
    run_id: int
    queue: str
    lock: str | None = None
    queueing_lock: str | None = None


async def defer(conn: AsyncConnection[Any], jobs: Sequence[Job]) -> list[int | None]:
    """Queue ``jobs`` (of different runs) on ``conn``, in the caller's transaction: each one's job id, or None when
    a job with its queueing lock is already waiting (or an earlier one of ``jobs`` has it)."""
    if not jobs:
        return []
    # procrastinate's table, as procrastinate_defer_jobs_v1 writes it (its triggers notify the workers and log the
    # deferral); ON CONFLICT is what that function cannot do, and what lets a group keep its other jobs.
    rows = [
        {"q": job.queue, "t": job.task, "l": job.lock, "ql": job.queueing_lock, "run_id": job.run_id, "n": n}
        for n, job in enumerate(jobs)
    ]
    cur = await conn.execute(
        """
        INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, args)
        SELECT q, t, l, ql, jsonb_build_object('run_id', run_id)
          FROM jsonb_to_recordset(%s::jsonb)
               AS job(q varchar, t varchar, l text, ql text, run_id bigint, n bigint)
         ORDER BY n
        ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
        RETURNING id, (args->>'run_id')::bigint
        """,
        (orjson.dumps(rows).decode(),),
    )
    deferred = {int(run_id): int(job_id) for job_id, run_id in await cur.fetchall()}
    return [deferred.get(job.run_id) for job in jobs]


class LaneJobManager(manager.JobManager):
    """procrastinate's job manager, fetching with the lanes' rules (``b24bridge_fetch_job``)."""

    def __init__(
        self,
        connector: procrastinate.BaseConnector,
        lane_slots: int = DEFAULT_LANE_SLOTS,
        prefetch: int = PREFETCH,
        workers: Callable[[], int] = lambda: 1,
    ) -> None:
        super().__init__(connector)
        self.lane_slots = lane_slots
        # Slots are per worker: each worker batches its own jobs, and a batch fills only from the jobs a worker has
        # in hand (bench: 3 workers sharing 100 slots of one portal reached 0.82 of its bound, 100 each 0.87+).
        self.workers = workers
        self.prefetch = prefetch
        self._taken: deque[procrastinate_jobs.Job] = deque()

    async def fetch_job(self, queues: Iterable[str] | None, worker_id: int) -> procrastinate_jobs.Job | None:
        if not self._taken:
            rows = await self.connector.execute_query_all_async(
                query=_FETCH, queues=list(queues) if queues is not None else None, worker_id=worker_id,
                lane_slots=self.lane_slots * max(1, self.workers()), max_jobs=self.prefetch,
            )  # fmt: skip
            self._taken.extend(procrastinate_jobs.Job.from_row(row) for row in rows)
        return self._taken.popleft() if self._taken else None

    async def give_back(self) -> None:
        """Jobs taken and not started go back to the queue (the worker is stopping)."""
        ids = [job.id for job in self._taken if job.id is not None]
        self._taken.clear()
        if ids:
            await self.connector.execute_query_async(query=_RELEASE, ids=ids)
