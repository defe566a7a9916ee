"""A slot freed in a lane at its slots starts the lane's next job at once: procrastinate's worker fetches again only
for a new job's notification or at its next poll, and a fetch that found the lane full came back empty."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import procrastinate
import psycopg

from b24bridge import lanes

POLL = 60.0  # far beyond the test's patience: a job started by the poll is a job started too late


async def _run_lane(url: str, jobs: int, *, retry_first: bool = False) -> list[int]:
    """``jobs`` jobs queued in one lane of one slot, a worker started after them (no notification reaches it);
    the order they ran in, once all have (a TimeoutError if they wait for the poll)."""
    connector = procrastinate.PsycopgConnector(conninfo=url)
    app = procrastinate.App(connector=connector)
    manager = app.job_manager = lanes.LaneJobManager(connector, lane_slots=1, prefetch=1)
    ran: list[int] = []
    done = asyncio.Event()

    @app.task(name="probe", retry=procrastinate.RetryStrategy(max_attempts=2, wait=0) if retry_first else False)
    async def probe(run_id: int) -> None:
        await manager.counted()  # a job takes longer than the count beside its fetch (runs in a bench: 0.1-1 s)
        ran.append(run_id)
        if retry_first and ran == [1]:
            raise RuntimeError("once more")
        if len(set(ran)) == jobs:
            done.set()

    with psycopg.connect(url, autocommit=True) as sync:
        for run_id in range(1, jobs + 1):
            sync.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args)"
                " VALUES (%s, 'probe', %s, jsonb_build_object('run_id', %s::bigint))",
                (lanes.lane("flood"), f"run:{run_id}", run_id),
            )
    async with app.open_async():
        worker = asyncio.ensure_future(
            app.run_worker_async(concurrency=10, fetch_job_polling_interval=POLL, install_signal_handlers=False)
        )
        try:
            await asyncio.wait_for(done.wait(), 20)
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
    return ran


async def test_a_job_that_ends_starts_the_next_of_its_full_lane(make_migrated_database: Callable[[], str]) -> None:
    assert await _run_lane(make_migrated_database(), 3) == [1, 2, 3]


async def test_a_job_that_is_retried_starts_the_next_of_its_full_lane(
    make_migrated_database: Callable[[], str],
) -> None:
    ran = await _run_lane(make_migrated_database(), 2, retry_first=True)
    assert ran[0] == 1 and sorted(set(ran)) == [1, 2]
