"""Accepting robot calls: checked, deduplicated, stored with their job in one transaction, answered at once.

A run is never stored without its job nor a job queued for a run that was rolled back: both are written on one
connection inside one transaction (procrastinate's ``connection=``). The portal waits for no one and never retries,
so whatever is decided here is final; the job (:mod:`.runner`) does the work and answers the workflow.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import procrastinate
from psycopg_pool import AsyncConnectionPool

from b24bridge.observability import get_logger
from b24bridge.portals.service import PortalRegistry
from b24bridge.runs.schemas import NewRun
from b24bridge.runs.service import RunLog

from . import tasks
from .form import parse_form
from .registry import InvalidInput, Robot
from .schemas import CallAnswer

log = get_logger(__name__)

# Only what identifies the portal and the acting user is kept from ``auth[...]``: tokens never reach the log.
_AUTH_KEPT = ("member_id", "domain", "user_id", "client_endpoint", "server_endpoint", "scope", "status")


class RobotIntake:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        registry: PortalRegistry,
        runs: RunLog,
        jobs: procrastinate.App,
        robots: Mapping[str, Robot],
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.runs = runs
        self.jobs = jobs
        self.robots = robots

    async def accept(self, code: str, body: str) -> CallAnswer:
        form = parse_form(body)
        auth = _mapping(form.get("auth"))
        member_id, app_token = auth.get("member_id"), auth.get("application_token")
        if not isinstance(member_id, str) or not isinstance(app_token, str) or not member_id or not app_token:
            return CallAnswer(401, "member_id and application_token are required")
        if await self.registry.verify_application_token(member_id, app_token) is None:
            log.warning("robots.call_refused", member_id=member_id, code=code)
            return CallAnswer(401, "unknown portal or wrong application_token")
        workflow_id, event_token = form.get("workflow_id"), form.get("event_token")
        if not isinstance(workflow_id, str) or not isinstance(event_token, str) or not workflow_id or not event_token:
            return CallAnswer(400, "workflow_id and event_token are required")

        raw = _mapping(form.get("properties"))
        status, error, values = "queued", None, {}
        robot = self.robots.get(code)
        if robot is None:
            status, error = "failed", f"robot {code!r} is not declared by this b24bridge (sync robots)"
        else:
            try:
                values = robot.validate(raw)
            except InvalidInput as exc:
                status, error = "failed", str(exc)
        document_id = form.get("document_id")
        run = NewRun(
            member_id=member_id,
            robot_code=code,
            workflow_id=workflow_id,
            event_token=event_token,
            document_id=[str(part) for part in document_id] if isinstance(document_id, list) else [],
            inputs={
                "properties": raw,
                "values": values,
                "document_type": form.get("document_type"),
                "use_subscription": form.get("use_subscription", "Y"),
                "timeout_duration": form.get("timeout_duration"),
                "ts": form.get("ts"),
                "auth": {key: auth[key] for key in _AUTH_KEPT if key in auth},
            },
            status=status,
            error=error,
            deadline_at=_deadline(form.get("timeout_duration")),
        )
        async with self.pool.connection() as conn, conn.transaction():
            run_id = await self.runs.open(conn, run)
            if run_id is None:
                return CallAnswer(200, "duplicate call, already accepted")
            await tasks.defer_run(self.jobs, conn, run_id)
        if error is not None:
            log.info("robots.call_invalid", member_id=member_id, code=code, run_id=run_id, error=error)
        return CallAnswer(200, "accepted", run_id=run_id)

    async def answer_again(self, run_ids: list[int]) -> list[int]:
        """Dead runs taken back in: each is answered again (its result, or its error) by a new job, with the retry
        schedule starting over. Returns the ids that were dead; others are left alone."""
        async with self.pool.connection() as conn, conn.transaction():
            revived = await self.runs.revive(conn, run_ids)
            for run_id in revived:
                await tasks.defer_run(self.jobs, conn, run_id)
        log.info("robots.answer_again", runs=revived)
        return revived


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _deadline(timeout: Any) -> dt.datetime | None:
    # Counted from our own clock on receipt, not the portal's ``ts``: clocks of two machines disagree.
    try:
        seconds = int(str(timeout))
    except ValueError:
        return None
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds) if seconds > 0 else None
