"""SQL of the run log (tables ``runs`` and ``run_calls``, migration 0004)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from b24bridge.context import current

from .schemas import NewRun, Run, RunCall

_COLUMNS = (
    "id, member_id, robot_code, workflow_id, event_token, document_id, inputs, status, outcome, error, attempts,"
    " answered_at, deadline_at, created_at, started_at, finished_at"
)


def _run(row: dict[str, Any]) -> Run:
    return Run(**row)


async def insert(conn: AsyncConnection[Any], run: NewRun) -> int | None:
    """The new run's id, or None when the same call (member, workflow, event token) was stored before."""
    finished = "now()" if run.status != "queued" else "NULL"
    cur = await conn.execute(
        f"""
        INSERT INTO runs (member_id, robot_code, workflow_id, event_token, document_id, inputs, status, error,
                          deadline_at, finished_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, {finished})
        ON CONFLICT (member_id, workflow_id, event_token) DO NOTHING
        RETURNING id
        """,
        (
            run.member_id,
            run.robot_code,
            run.workflow_id,
            run.event_token,
            Jsonb(run.document_id),
            Jsonb(run.inputs),
            run.status,
            run.error,
            run.deadline_at,
        ),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def get(run_id: int) -> Run | None:
    async with current().database.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(f"SELECT {_COLUMNS} FROM runs WHERE id = %s", (run_id,))
        row = await cur.fetchone()
    return None if row is None else _run(row)


async def find(member_id: str, workflow_id: str, event_token: str) -> Run | None:
    async with current().database.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"SELECT {_COLUMNS} FROM runs WHERE member_id = %s AND workflow_id = %s AND event_token = %s",
            (member_id, workflow_id, event_token),
        )
        row = await cur.fetchone()
    return None if row is None else _run(row)


async def list_runs(member_id: str | None = None, status: str | None = None, limit: int = 50) -> list[Run]:
    async with current().database.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"""
            SELECT {_COLUMNS} FROM runs
             WHERE (%(member)s::text IS NULL OR member_id = %(member)s)
               AND (%(status)s::text IS NULL OR status = %(status)s)
             ORDER BY id DESC LIMIT %(limit)s
            """,
            {"member": member_id, "status": status, "limit": limit},
        )
        rows = await cur.fetchall()
    return [_run(row) for row in rows]


async def calls(run_id: int) -> list[RunCall]:
    async with current().database.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT id, run_id, method, status, duration, error, at FROM run_calls WHERE run_id = %s ORDER BY id",
            (run_id,),
        )
        rows = await cur.fetchall()
    return [RunCall(**row) for row in rows]


async def start_attempt(run_id: int) -> Run | None:
    """Count an attempt and mark the run running; a run whose outcome is decided is returned unchanged."""
    async with current().database.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"""
            UPDATE runs SET status = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now())
             WHERE id = %s AND status IN ('queued', 'running')
            RETURNING {_COLUMNS}
            """,
            (run_id,),
        )
        row = await cur.fetchone()
        if row is None:
            await cur.execute(f"SELECT {_COLUMNS} FROM runs WHERE id = %s", (run_id,))
            row = await cur.fetchone()
    return None if row is None else _run(row)


async def finish(run_id: int, status: str, outcome: dict[str, Any] | None, error: str | None) -> None:
    async with current().database.pool.connection() as conn:
        await conn.execute(
            "UPDATE runs SET status = %s, outcome = %s, error = %s, finished_at = now() WHERE id = %s",
            (status, Jsonb(outcome) if outcome is not None else None, error, run_id),
        )


async def requeue(run_id: int, error: str) -> None:
    """A retryable failure: the run waits for its next attempt, the error is kept for whoever looks."""
    async with current().database.pool.connection() as conn:
        await conn.execute("UPDATE runs SET status = 'queued', error = %s WHERE id = %s", (error, run_id))


async def mark_answered(run_id: int, error: str | None = None) -> None:
    async with current().database.pool.connection() as conn:
        await conn.execute(
            "UPDATE runs SET answered_at = now(), error = coalesce(%s, error) WHERE id = %s", (error, run_id)
        )


async def record_call(run_id: int, method: str, status: str, duration: float, error: str | None) -> None:
    async with current().database.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO run_calls (run_id, method, status, duration, error) VALUES (%s, %s, %s, %s, %s)",
            (run_id, method, status, duration, error),
        )
