"""The job queue's lanes: one per portal, so that one portal's flood never stalls the others.

procrastinate takes jobs first in, first out, and a job waiting for its portal's limiter holds a worker slot while it
waits: 5,000 robot calls from one portal would fill every slot with jobs that can only go at that portal's two
requests a second, and every other portal's calls would wait behind them for minutes. So every job of b24bridge's
runs is deferred into its portal's lane (procrastinate's ``queue_name``: ``p:<portal key>``), and workers fetch with
``b24bridge_fetch_job`` (migration 0008) instead of procrastinate's own query: a lane already running
``lane_slots`` jobs gets no more, and among the others the lane with the fewest running jobs goes first. A portal
therefore holds at most the slots its limits can use, and a quiet portal's job is the next one taken. A job that
ends in a lane with jobs waiting wakes the worker's fetch at once (procrastinate's worker would wait for another
job's notification or its next poll).

A worker also counts each lane's jobs, running and waiting, beside its fetches (:class:`LaneBacklog`): the Bitrix24
client asks it how many calls a portal has coming, and keeps that portal's requests full while many are
(``b24bridge.bitrix.batching``).

Jobs are deferred here in bulk on the caller's connection (:func:`defer`), inside the caller's transaction: one
statement for a whole group of accepted calls (the door's group commit), where procrastinate's own ``defer`` is a
round trip per job. A job with a queueing lock that is already waiting is left out, not an error, so one coalesced
trigger never fails the others of its group.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import procrastinate
from procrastinate import jobs as procrastinate_jobs
from procrastinate import manager
from psycopg import AsyncConnection

from b24bridge.coalesce import Coalescer

__all__ = ["DEFAULT_LANE_SLOTS", "Job", "LaneBacklog", "LaneJobManager", "defer", "lane"]

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

# Waiting jobs counted per lane: up to twice its slots (what they let start soon, and as many again, so that the ends
# counted down between two counts, :meth:`LaneBacklog.ended`, still see the jobs behind them), and never more than this.
BACKLOG_CAP = 1000
# How often a worker counts them: every tenth of a second while it takes jobs, every half second while it takes none;
# a count older than BACKLOG_STALE (the worker stopped fetching) is unknown.
BACKLOG_EVERY = 0.5
BACKLOG_AFTER_TAKING = 0.1
BACKLOG_STALE = 2.0
# Jobs of a lane taken in the last ARRIVAL_SPAN seconds stand for as many more on their way (see LaneBacklog.of), once
# they are ARRIVALS_MIN or more (20 a second): a handful at once (a workflow started on three deals) is not a flood,
# and its calls go as they come.
ARRIVAL_SPAN = 0.25
ARRIVALS_MIN = 5
# procrastinate's own end of a job, for several jobs in one statement (one failing fails the statement, and the
# coalescer then ends each alone).
_FINISH = """
SELECT procrastinate_finish_job_v1(job_id, end_status::procrastinate_job_status, delete_job)
  FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(deletes)s::boolean[]) AS v(job_id, end_status, delete_job)
"""

_COUNT = """
WITH RECURSIVE lanes(queue_name) AS (
    (SELECT queue_name FROM procrastinate_jobs WHERE status = 'todo' ORDER BY queue_name LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue_name FROM procrastinate_jobs j
             WHERE j.status = 'todo' AND j.queue_name > lanes.queue_name
             ORDER BY j.queue_name LIMIT 1)
      FROM lanes WHERE lanes.queue_name IS NOT NULL
),
jobs(queue_name, due, running) AS (
    SELECT lanes.queue_name,
           (SELECT count(*) FROM (SELECT 1 FROM procrastinate_jobs j
                                   WHERE j.status = 'todo' AND j.queue_name = lanes.queue_name
                                     AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                                   LIMIT %(cap)s) AS due), 0
      FROM lanes WHERE lanes.queue_name IS NOT NULL
    UNION ALL
    SELECT queue_name, 0, count(*) FROM procrastinate_jobs WHERE status = 'doing' GROUP BY queue_name
)
SELECT queue_name, sum(due)::integer AS due, sum(running)::integer AS running FROM jobs
 WHERE %(queues)s::varchar[] IS NULL OR queue_name = ANY(%(queues)s)
 GROUP BY queue_name
"""


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


@dataclass
class _LaneCount:
    running: int  # any worker's
    due: int  # waiting, due now (up to twice the lane's slots)


class LaneBacklog:
    """The jobs of each lane that will make calls soon, as this process's worker last counted them: those running
    (any worker's) and those waiting, due now, that the lane's free slots let start. How many calls each portal has
    coming; nothing is known without a worker fetching (0)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lanes: dict[str, _LaneCount] = {}
        self._slots = 0
        self._counted = float("-inf")  # the last count
        self._known = float("-inf")  # the last count, or jobs taken since
        self._uncounted: set[str] = set()  # lanes known only from jobs taken since the last count
        self._arrivals: dict[str, deque[float]] = {}  # when this worker took each lane's jobs, the last ARRIVAL_SPAN

    def of(self, portal_key: str) -> int:
        """Jobs running or about to for the portal ``portal_key`` (a :data:`b24bridge.bitrix.Backlog`), and as many
        more as were taken in the last ``ARRIVAL_SPAN``.

        Why the last: a flood that reaches the door over seconds (a portal sends its robot calls a few hundred a
        second) is taken as it comes, so no count shows jobs waiting, and every job taken has its call waiting in
        the batcher already: its first requests went out with what had come (8, 8, 34 commands in the bridge
        flood's first 0.4 s, each half a second at the limiter's end). Jobs still arriving are calls still coming;
        once they stop, the last span's are forgotten a quarter of a second later, and the request goes. A quiet
        portal's job a second, or a few at once, are fewer than ``ARRIVALS_MIN``: nothing more is taken to come."""
        key = lane(portal_key)
        now = self.clock()
        arriving = self._arriving(key, now)
        count = self._lanes.get(key)
        if count is None or now - self._known > BACKLOG_STALE:
            return arriving
        return count.running + min(count.due, max(0, self._slots - count.running)) + arriving

    def _arriving(self, queue_name: str, now: float) -> int:
        stamps = self._arrivals.get(queue_name)
        if stamps is None:
            return 0
        while stamps and now - stamps[0] > ARRIVAL_SPAN:
            stamps.popleft()
        if not stamps:
            del self._arrivals[queue_name]
            return 0
        return len(stamps) if len(stamps) >= ARRIVALS_MIN else 0

    def due(self, *, taken: bool) -> bool:
        """Whether to count again, after a fetch that ``taken`` jobs or none."""
        return self.clock() - self._counted >= (BACKLOG_AFTER_TAKING if taken else BACKLOG_EVERY)

    def counted(self, lanes: dict[str, _LaneCount], slots: int) -> None:
        """A new count: each lane's jobs, and how many of a lane may run at once (all workers)."""
        self._lanes = lanes
        self._slots = slots
        self._counted = self._known = self.clock()
        self._uncounted = set()
        for queue_name in list(self._arrivals):  # lanes whose jobs stopped coming
            self._arriving(queue_name, self._counted)

    def taken(self, queue_names: Iterable[str]) -> bool:
        """Jobs of these lanes were just taken here. A lane the last count did not see (a flood's first jobs) has
        them running before the next count can say so: without this, their calls went out a few at a time (5
        requests of 1 to 6 commands in the flood's first 0.3 s, each half a second at the limiter's end). A lane it
        did see knows them already: they were among its waiting jobs, or took the slot of one that ended.

        Whether several jobs of one lane no count has seen were among them: a flood starting, whose waiting jobs are
        worth counting at once. A quiet portal's lane is often unseen too (no job of it when the count ran), but one
        job at a time: counting for each would count all the time."""
        if self.clock() - self._known > BACKLOG_STALE:  # what was counted is unknown now: only these are known
            self._lanes, self._uncounted = {}, set()
        now = self._known = self.clock()
        uncounted_before = set(self._uncounted)
        first_seen: dict[str, int] = {}  # jobs taken now of each lane nothing had seen before
        for queue_name in queue_names:
            self._arrivals.setdefault(queue_name, deque()).append(now)  # older ones go at the next count or ask
            if queue_name in self._lanes and queue_name not in self._uncounted:
                continue  # the count saw it
            self._uncounted.add(queue_name)
            self._lanes.setdefault(queue_name, _LaneCount(running=0, due=0)).running += 1
            if queue_name not in uncounted_before:
                first_seen[queue_name] = first_seen.get(queue_name, 0) + 1
        return any(taken > 1 for taken in first_seen.values())

    def ended(self, queue_name: str) -> bool:
        """A job of the lane ``queue_name`` ended here: a waiting one takes its slot, or the lane has one less until
        the next count (at a flood's end no job is taken, so that may be half a second away). Whether a waiting job
        was counted to take the slot."""
        count = self._lanes.get(queue_name)
        if count is None:
            return False
        if count.due > 0:
            count.due -= 1
            return True
        if count.running > 0:
            count.running -= 1
        return False

    def retried(self, queue_name: str, *, due_now: bool) -> bool:
        """A job of the lane ``queue_name`` went back to its queue, to run again now (``due_now``) or later: one less
        running, one more waiting if due. Whether the lane has jobs waiting."""
        count = self._lanes.get(queue_name)
        if count is None:
            return due_now
        if count.running > 0:
            count.running -= 1
        if due_now:
            count.due += 1
        return count.due > 0


class LaneJobManager(manager.JobManager):
    """procrastinate's job manager, fetching with the lanes' rules (``b24bridge_fetch_job``)."""

    def __init__(
        self,
        connector: procrastinate.BaseConnector,
        lane_slots: int = DEFAULT_LANE_SLOTS,
        prefetch: int = PREFETCH,
        workers: Callable[[], int] = lambda: 1,
        backlog: LaneBacklog | None = None,
    ) -> None:
        super().__init__(connector)
        self.backlog = backlog or LaneBacklog()
        self.lane_slots = lane_slots
        # Slots are per worker: each worker batches its own jobs, and a batch fills only from the jobs a worker has
        # in hand (bench: 3 workers sharing 100 slots of one portal reached 0.82 of its bound, 100 each 0.87+).
        self.workers = workers
        self.prefetch = prefetch
        self._taken: deque[procrastinate_jobs.Job] = deque()
        # Jobs that end together (the runs one batch's answer woke) end in one statement.
        self._endings = Coalescer(self._finish_together, distinct=lambda ending: ending[0])
        self._counting: asyncio.Future[None] | None = None
        self._wake: manager.NotificationCallback | None = None
        self._freed = 0  # slots freed in lanes with jobs waiting, ever (see fetch_job)

    async def listen_for_jobs(
        self, *, on_notification: manager.NotificationCallback, queues: Iterable[str] | None = None
    ) -> None:
        # The worker's own callback, kept to tell it of a slot freed in a full lane (see :meth:`_slot_freed`).
        self._wake = on_notification
        try:
            await super().listen_for_jobs(on_notification=on_notification, queues=queues)
        finally:
            if self._wake is on_notification:  # a worker started since has its own
                self._wake = None

    async def fetch_job(self, queues: Iterable[str] | None, worker_id: int) -> procrastinate_jobs.Job | None:
        while not self._taken:
            freed = self._freed
            rows = await self.connector.execute_query_all_async(
                query=_FETCH, queues=list(queues) if queues is not None else None, worker_id=worker_id,
                lane_slots=self._slots(), max_jobs=self.prefetch,
            )  # fmt: skip
            taken = [procrastinate_jobs.Job.from_row(row) for row in rows]
            self._taken.extend(taken)
            unseen = self.backlog.taken(job.queue for job in taken)
            # Counted often while jobs are taken (a flood's count climbs while its jobs are still arriving, and its
            # first requests are decided on it), now and then otherwise. Beside the fetch, never in its way: a job's
            # start does not wait for a count.
            due = unseen or self.backlog.due(taken=bool(rows))
            if due and (self._counting is None or self._counting.done()):
                self._counting = asyncio.ensure_future(self._count_backlog(queues))
            if rows or freed == self._freed:
                break
            # A slot was freed while the query ran (it may have seen the lane full): the worker's wake-up came
            # during the fetch, which procrastinate's loop forgets once the fetch ends, so ask again now.
        return self._taken.popleft() if self._taken else None

    def _slots(self) -> int:
        """How many of a lane's jobs may run at once: its slots for each live worker."""
        return self.lane_slots * max(1, self.workers())

    async def _count_backlog(self, queues: Iterable[str] | None) -> None:
        slots = self._slots()
        try:
            rows = await self.connector.execute_query_all_async(
                query=_COUNT, queues=list(queues) if queues is not None else None, cap=min(BACKLOG_CAP, 2 * slots)
            )
        except Exception:  # the database is away: the fetch says so; the count is just unknown a while longer
            return
        # A lane's waiting jobs start only as far as its slots allow: beyond them they make no call soon.
        self.backlog.counted({row["queue_name"]: _LaneCount(row["running"], row["due"]) for row in rows}, slots)

    async def finish_job(
        self, job: procrastinate_jobs.Job, status: procrastinate_jobs.Status, delete_job: bool
    ) -> None:
        assert job.id is not None
        await self._endings((job.id, status.value, delete_job))
        await self._slot_freed(job, waiting=self.backlog.ended(job.queue))

    async def _finish_together(self, endings: list[tuple[int, str, bool]]) -> list[None]:
        await self.connector.execute_query_async(
            query=_FINISH, ids=[e[0] for e in endings], statuses=[e[1] for e in endings],
            deletes=[e[2] for e in endings],
        )  # fmt: skip
        return [None] * len(endings)

    async def retry_job(
        self, job: procrastinate_jobs.Job, retry_at: dt.datetime | None = None, *args: Any, **kwargs: Any
    ) -> None:
        await super().retry_job(job, retry_at, *args, **kwargs)
        if retry_at is not None and retry_at.tzinfo is None:
            retry_at = retry_at.replace(tzinfo=dt.UTC)  # procrastinate's are aware; a naive one is UTC, as it is there
        due_now = retry_at is None or retry_at <= dt.datetime.now(dt.UTC)
        await self._slot_freed(job, waiting=self.backlog.retried(job.queue, due_now=due_now))

    async def _slot_freed(self, job: procrastinate_jobs.Job, *, waiting: bool) -> None:
        """A job ended or went back to its queue: if its lane has jobs ``waiting``, the worker fetches again now.

        procrastinate's worker fetches again only when a job is inserted (its notification) or every polling
        interval, and a fetch that found every waiting job in a lane at its slots came back empty: a flood's freed
        slots stayed empty until another portal's job or the next poll woke the worker, up to a second each time
        (the flood went in bursts, one a second). The worker's own callback is told of the free slot as of a new job
        (no query: the next fetch is the query).
        """
        if not waiting:
            return
        self._freed += 1
        if self._wake is not None and not self._taken:
            notice: procrastinate_jobs.JobInserted = {"type": "job_inserted", "job_id": job.id or 0}
            channel = next(iter(manager.get_channel_for_queues([job.queue])))
            await self._wake(channel=channel, notification=notice)

    async def counted(self) -> None:
        """Wait for a count under way to land in the backlog."""
        if self._counting is not None:
            await self._counting

    async def give_back(self) -> None:
        """Jobs taken and not started go back to the queue (the worker is stopping)."""
        await self.counted()
        ids = [job.id for job in self._taken if job.id is not None]
        self._taken.clear()
        if ids:
            await self.connector.execute_query_async(query=_RELEASE, ids=ids)
