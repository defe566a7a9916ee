"""The run log can always record a run's end, whatever text a portal or a robot put in it; runs that start and
end together share a statement."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from b24bridge.bitrix import CallRecord
from b24bridge.db import Database
from b24bridge.runs import repository
from b24bridge.runs.schemas import NewRun
from b24bridge.runs.service import RunLog


async def _new_run(runs: RunLog) -> int:
    workflow = uuid.uuid4().hex
    run = NewRun(member_id="m", document_id=["crm", "CCrmDocumentDeal", "DEAL_1"], inputs={}, robot_code="create",
                 workflow_id=workflow, event_token=f"{workflow}|token")  # fmt: skip
    async with runs.pool.connection() as conn:
        run_id = await runs.open(conn, run)
    assert run_id is not None
    return run_id


async def test_text_postgresql_cannot_hold_is_recorded_with_its_characters_replaced(database: Database) -> None:
    """A portal's answer with a NUL (PostgreSQL refuses it in text and jsonb) or a lone surrogate in a robot's
    outcome, an error or a call's error: recorded with U+FFFD in their place, not refused (a refused end had the
    run's job tried again every two seconds for ever)."""
    runs = RunLog(database.pool)
    run_id = await _new_run(runs)
    await runs.recorder(run_id)(CallRecord("crm.contact.get", "error", 0.01, "bad\x00name \ud800"))
    run = await runs.finish(run_id, "succeeded", outcome={"values": {"name\x00": "Ann\x00Lee"}, "message": "\udfff"})
    assert run.outcome == {"values": {"name\ufffd": "Ann\ufffdLee"}, "message": "\ufffd"}
    await runs.mark_answered(run_id, "answer\x00")
    await runs.mark_dead(run_id, "dead\x00 \ud800")
    found = await runs.show(run_id)
    assert found is not None
    stored, calls = found
    assert (stored.status, stored.error) == ("dead", "dead\ufffd \ufffd")
    assert [(call.method, call.error) for call in calls] == [("crm.contact.get", "bad\ufffdname \ufffd")]


async def test_runs_that_start_and_end_together_share_one_statement_each_with_its_own_values(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's answer wakes the runs it carried at once: their starts, and then their ends, are one statement
    each (they were a statement a run), and every run is recorded with its own outcome, error and answer; a run that
    is dead starts no attempt, one that does not exist is None."""
    statements: list[str] = []
    for name in ("start_attempts", "finish"):
        real = getattr(repository, name)

        def counting(conn: Any, items: Any, *, _real: Any = real, _name: str = name) -> Any:
            statements.append(_name)
            return _real(conn, items)

        monkeypatch.setattr(repository, name, counting)
    runs = RunLog(database.pool)
    ids = [await _new_run(runs) for _ in range(12)]
    await runs.mark_dead(ids[-1], "given up")
    started = await asyncio.gather(*(runs.begin_attempt(run_id) for run_id in [*ids, 10**12]))
    assert statements == ["start_attempts"]
    assert started[-1] is None
    assert [(run.status, run.attempts) for run in started[:-1] if run is not None] == [("running", 1)] * 11 + [
        ("dead", 0)
    ]
    ended = await asyncio.gather(
        *(
            runs.finish(run_id, "succeeded" if n % 2 else "failed", outcome={"n": n}, error=f"e{n}", answered=n == 3)
            for n, run_id in enumerate(ids[:-1])
        )
    )
    assert statements == ["start_attempts", "finish"]
    for n, run in enumerate(ended):
        assert (run.id, run.status, run.outcome, run.error) == (ids[n], "succeeded" if n % 2 else "failed", {"n": n},
                                                                f"e{n}")  # fmt: skip
        assert (run.answered_at is not None) == (n == 3) and run.finished_at is not None
