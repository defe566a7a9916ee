"""SQL of the run log (tables ``runs`` and ``run_calls``, migration 0004). Every function takes its connection.

What a run's end records (its outcome, an error, a call's error) is a portal's or a robot's text, which may hold
what PostgreSQL cannot (a NUL): it is written :func:`~b24bridge.safetext.storable`, so the record of a run can
always be written (a refused one had its job tried again every two seconds for ever).
"""

from __future__ import annotations

from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from b24bridge.safetext import storable

from .schemas import NewRun, Revived, Run, RunCall, RunFilter

Conn = AsyncConnection[Any]

_COLUMNS = (
    "id, kind, member_id, robot_code, route, trigger, workflow_id, event_token, document_id, inputs, status,"
    " outcome, error, attempts, answered_at, deadline_at, created_at, started_at, finished_at"
)


async def insert(conn: Conn, run: NewRun) -> int | None:
    """The new run's id, or None when the same call (member, workflow, event token) was stored before."""
    finished = "now()" if run.status != "queued" else "NULL"
    cur = await conn.execute(
        f"""
        INSERT INTO runs (kind, member_id, robot_code, route, trigger, workflow_id, event_token, document_id,
                          inputs, status, error, deadline_at, finished_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {finished})
        ON CONFLICT (member_id, workflow_id, event_token) DO NOTHING
        RETURNING id
        """,
        (
            run.kind,
            run.member_id,
            run.robot_code,
            run.route,
            run.trigger,
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


async def get(conn: Conn, run_id: int) -> Run | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM runs WHERE id = %s", (run_id,))
        row = await cur.fetchone()
    return None if row is None else Run(**row)


_MATCHING = """
    (%(member)s::text IS NULL OR member_id = %(member)s)
    AND (%(status)s::text IS NULL OR status = %(status)s)
    AND (%(kind)s::text IS NULL OR kind = %(kind)s)
    AND (%(route)s::text IS NULL OR route = %(route)s)
    AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
"""


def _matching(where: RunFilter) -> dict[str, Any]:
    return {
        "member": where.member_id,
        "status": where.status,
        "kind": where.kind,
        "route": where.route,
        "since": where.since,
    }


async def list_runs(conn: Conn, where: RunFilter, limit: int) -> list[Run]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM runs WHERE {_MATCHING} ORDER BY id DESC LIMIT %(limit)s",
            {**_matching(where), "limit": limit},
        )
        return [Run(**row) for row in await cur.fetchall()]


async def count_by_status(conn: Conn, where: RunFilter) -> dict[str, int]:
    """How many runs match ``where``, per status (statuses without runs left out)."""
    cur = await conn.execute(f"SELECT status, count(*) FROM runs WHERE {_MATCHING} GROUP BY status", _matching(where))
    return {str(status): int(count) for status, count in await cur.fetchall()}


async def calls(conn: Conn, run_id: int) -> list[RunCall]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, run_id, method, status, duration, error, at FROM run_calls WHERE run_id = %s ORDER BY id",
            (run_id,),
        )
        return [RunCall(**row) for row in await cur.fetchall()]


async def by_intake_key(conn: Conn, intake_key: str) -> Run | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM runs WHERE intake_key = %s", (intake_key,))
        row = await cur.fetchone()
    return None if row is None else Run(**row)


async def start_attempts(conn: Conn, run_ids: list[int]) -> list[Run | None]:
    """Count an attempt of each run (of the work, or of the answer once the work is done), in one statement; a
    queued run becomes running. A run that is answered or dead is returned unchanged: nothing is left to attempt.
    The runs in ``run_ids`` order, None for one that does not exist; each id at most once."""
    if len(set(run_ids)) < len(run_ids):
        raise ValueError("each run's attempt is counted once a statement")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            UPDATE runs SET attempts = attempts + 1, started_at = coalesce(started_at, now()),
                            status = CASE WHEN status IN ('queued', 'running') THEN 'running' ELSE status END
             WHERE id = ANY(%s) AND status <> 'dead' AND answered_at IS NULL
            RETURNING {_COLUMNS}
            """,
            (run_ids,),
        )
        found = {row["id"]: Run(**row) for row in await cur.fetchall()}
        unchanged = [run_id for run_id in run_ids if run_id not in found]
        if unchanged:
            await cur.execute(f"SELECT {_COLUMNS} FROM runs WHERE id = ANY(%s)", (unchanged,))
            found.update((row["id"], Run(**row)) for row in await cur.fetchall())
    return [found.get(run_id) for run_id in run_ids]


# (run id, status, outcome, error, answered): what a run's end records.
Ending = tuple[int, str, dict[str, Any] | None, str | None, bool]


async def finish(conn: Conn, endings: list[Ending]) -> list[Run | None]:
    """Record each run's outcome (and, when answered, that the workflow has it), all in one statement; the runs as
    stored, in ``endings`` order (None for one that does not exist); each run at most once."""
    if len({ending[0] for ending in endings}) < len(endings):
        raise ValueError("each run's end is recorded once a statement")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            UPDATE runs SET status = v_status, outcome = v_outcome, error = v_error, finished_at = now(),
                            answered_at = CASE WHEN v_answered THEN now() ELSE answered_at END
              FROM unnest(%s::bigint[], %s::text[], %s::jsonb[], %s::text[], %s::boolean[])
                   AS v(v_id, v_status, v_outcome, v_error, v_answered)
             WHERE id = v_id
            RETURNING {_COLUMNS}
            """,
            (
                [run_id for run_id, *_ in endings],
                [status for _, status, *_ in endings],
                [Jsonb(storable(outcome)) if outcome is not None else None for _, _, outcome, _, _ in endings],
                [storable(error) for *_, error, _ in endings],
                [answered for *_, answered in endings],
            ),
        )
        found = {row["id"]: Run(**row) for row in await cur.fetchall()}
    return [found.get(run_id) for run_id, *_ in endings]


async def requeue(conn: Conn, run_id: int, error: str) -> None:
    """A retryable failure: the run waits for its next attempt, the error is kept for whoever looks."""
    await conn.execute("UPDATE runs SET status = 'queued', error = %s WHERE id = %s", (storable(error), run_id))


async def mark_answered(conn: Conn, run_id: int, error: str | None) -> None:
    await conn.execute(
        "UPDATE runs SET answered_at = now(), error = coalesce(%s, error) WHERE id = %s", (storable(error), run_id)
    )


async def record_calls(conn: Conn, calls: list[tuple[int, str, str, float, str | None]]) -> None:
    """``(run_id, method, status, duration, error)`` rows, in order, in one statement."""
    # Only the error is a portal's text; the method and status are our own.
    rows = [{"r": r, "m": m, "s": s, "d": d, "e": storable(e), "n": n} for n, (r, m, s, d, e) in enumerate(calls)]
    await conn.execute(
        """
        INSERT INTO run_calls (run_id, method, status, duration, error)
        SELECT r, m, s, d, e FROM jsonb_to_recordset(%s::jsonb) AS c(r bigint, m text, s text, d real, e text, n int)
         ORDER BY n
        """,
        (orjson.dumps(rows).decode(),),
    )


async def mark_dead(conn: Conn, run_id: int, reason: str) -> str | None:
    """The run's kind, or None if there is no such run."""
    cur = await conn.execute(
        "UPDATE runs SET status = 'dead', error = %s, finished_at = now() WHERE id = %s RETURNING kind",
        (storable(reason), run_id),
    )
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def revive(conn: Conn, run_ids: list[int]) -> list[Revived]:
    """Dead runs taken back in, and only dead ones (a run that is not dead is left alone, so replaying twice at once
    cannot run anything twice). A robot run keeps its work's outcome (values, or the error) and is answered again; a
    bridge run is delivered again from the start. The retry schedule starts over either way."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            UPDATE runs SET
                status = CASE WHEN kind = 'bridge' THEN 'queued'
                              WHEN outcome IS NOT NULL THEN 'succeeded' ELSE 'failed' END,
                outcome = CASE WHEN kind = 'bridge' THEN NULL ELSE outcome END,
                finished_at = CASE WHEN kind = 'bridge' THEN NULL ELSE now() END,
                attempts = 0, answered_at = NULL,
                inputs = inputs || jsonb_build_object('replays', COALESCE((inputs->>'replays')::int, 0) + 1)
             WHERE id = ANY(%s) AND status = 'dead'
            RETURNING id, kind, member_id, inputs, document_id
            """,
            (run_ids,),
        )
        rows = await cur.fetchall()
    return sorted((Revived(**row) for row in rows), key=lambda r: r.id)
