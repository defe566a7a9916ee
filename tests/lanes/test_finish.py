"""Jobs that end together (the runs one batch's answer woke) end in one statement, each as it would alone; a job
that cannot end (not running any more) fails only its own end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import procrastinate
import psycopg
import pytest
from procrastinate import jobs as procrastinate_jobs

from b24bridge import lanes

SUCCEEDED = procrastinate_jobs.Status.SUCCEEDED


def _running(url: str, count: int) -> list[procrastinate_jobs.Job]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status)"
            " SELECT %s, 'probe', 'run:' || n, jsonb_build_object('run_id', n), 'doing' FROM generate_series(1, %s) n"
            " RETURNING id",
            (lanes.lane("p"), count),
        ).fetchall()
    return [procrastinate_jobs.Job(id=row[0], queue=lanes.lane("p"), lock=None, queueing_lock=None,
                                   task_name="probe") for row in rows]  # fmt: skip


def _statuses(url: str) -> dict[int, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return dict(conn.execute("SELECT id, status::text FROM procrastinate_jobs").fetchall())


async def test_jobs_ending_together_end_in_one_statement_and_one_that_cannot_fails_alone(
    make_migrated_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_migrated_database()
    connector = procrastinate.PsycopgConnector(conninfo=url)
    manager = lanes.LaneJobManager(connector)
    statements: list[str] = []
    real = connector.execute_query_async

    async def counting(query: str, **arguments: Any) -> None:
        statements.append(query)
        await real(query, **arguments)

    monkeypatch.setattr(connector, "execute_query_async", counting)
    jobs = _running(url, 6)
    await connector.open_async()
    try:
        await asyncio.gather(*(manager.finish_job(job, SUCCEEDED, delete_job=n == 2) for n, job in enumerate(jobs[:5])))
        assert len(statements) == 1
        assert _statuses(url) == {job.id: "succeeded" for n, job in enumerate(jobs[:5]) if n != 2} | {
            jobs[5].id: "doing"
        }
        # jobs[0] ended already: its end is refused; the job beside it still ends.
        ended = await asyncio.gather(
            manager.finish_job(jobs[0], SUCCEEDED, delete_job=False),
            manager.finish_job(jobs[5], SUCCEEDED, delete_job=False),
            return_exceptions=True,
        )
        assert isinstance(ended[0], procrastinate.exceptions.ConnectorException) and ended[1] is None
        assert "not found" in str(ended[0].__cause__)
        assert _statuses(url)[jobs[5].id] == "succeeded"  # type: ignore[index]
    finally:
        await connector.close_async()
