"""The SQL of one group of accepted calls: their runs and their jobs, in a handful of statements for the group."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson
from psycopg import AsyncConnection

from b24bridge import lanes
from b24bridge.runs.schemas import NewRun

from .schemas import RUN_ID, Stored, Submission

Conn = AsyncConnection[Any]


async def store(conn: Conn, group: Sequence[Submission]) -> list[Stored]:
    """Store ``group`` on ``conn`` inside the caller's transaction: what became of each, in order.

    A call stored before (the same robot call: member, workflow, event token; or the same intake key) is a
    duplicate; a run whose job finds one of its record already waiting (the queueing lock) is coalesced and not kept.
    Neither fails the others.
    """
    # One JSON document for the whole group: psycopg dumps one string where thirteen arrays of text cost it
    # (and its escaping of each element) more than the statement costs the server.
    rows = orjson.dumps(
        [
            {**_run_row(submission.run), "intake_key": submission.intake_key, "n": n}
            for n, submission in enumerate(group)
        ]
    )
    cur = await conn.execute(
        """
        INSERT INTO runs (kind, member_id, robot_code, route, trigger, workflow_id, event_token, document_id,
                          inputs, status, error, deadline_at, finished_at, intake_key)
        SELECT kind, member_id, robot_code, route, trigger, workflow_id, event_token, document_id,
               inputs, status, error, deadline_at, CASE WHEN status <> 'queued' THEN now() END, intake_key
          FROM jsonb_to_recordset(%s::jsonb)
               AS run(kind text, member_id text, robot_code text, route text, trigger text, workflow_id text,
                      event_token text, document_id jsonb, inputs jsonb, status text, error text,
                      deadline_at timestamptz, intake_key text, n bigint)
         ORDER BY n
        ON CONFLICT DO NOTHING
        RETURNING id, intake_key
        """,
        (rows.decode(),),
    )
    run_ids = {str(key): int(run_id) for run_id, key in await cur.fetchall()}
    new = [submission for submission in group if submission.intake_key in run_ids]
    jobs = [
        lanes.Job(
            task=submission.task,
            run_id=run_ids[submission.intake_key],
            queue=lanes.lane(submission.lane_key),
            lock=_with_run_id(submission.lock, run_ids[submission.intake_key]),
            queueing_lock=_with_run_id(submission.queueing_lock, run_ids[submission.intake_key]),
        )
        for submission in new
    ]
    job_ids = dict(zip((job.run_id for job in jobs), await lanes.defer(conn, jobs), strict=True))
    coalesced = [run_id for run_id, job_id in job_ids.items() if job_id is None]
    if coalesced:
        await conn.execute("DELETE FROM runs WHERE id = ANY(%s)", (coalesced,))
    answers = []
    for submission in group:
        run_id = run_ids.get(submission.intake_key)
        if run_id is None:
            answers.append(Stored("duplicate"))
        elif job_ids[run_id] is None:
            answers.append(Stored("coalesced"))
        else:
            answers.append(Stored("accepted", run_id))
    return answers


_RUN_FIELDS = tuple(field.name for field in dataclasses.fields(NewRun))


def _run_row(run: NewRun) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies the inputs, a tenth of what a robot call cost (py-spy).
    row = {name: getattr(run, name) for name in _RUN_FIELDS}
    row["deadline_at"] = run.deadline_at.isoformat() if run.deadline_at is not None else None
    return row


def _with_run_id(lock: str | None, run_id: int) -> str | None:
    return lock.replace(RUN_ID, str(run_id)) if lock is not None else None
