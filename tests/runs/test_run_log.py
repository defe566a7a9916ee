"""The run log can always record a run's end, whatever text a portal or a robot put in it."""

from __future__ import annotations

import uuid

from b24bridge.bitrix import CallRecord
from b24bridge.db import Database
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
