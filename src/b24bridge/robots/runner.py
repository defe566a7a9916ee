"""Running a robot call (the job's work): the robot's calls, its outcome, and the answer to the workflow.

Whatever goes wrong - invalid inputs, a portal error, a deadline about to pass - the workflow gets an answer with the
error, so the business process never hangs until its timeout.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from b24bridge.bitrix import BitrixError, CallObserver, Portal
from b24bridge.observability import get_logger
from b24bridge.portals.service import PortalRegistry
from b24bridge.runs.schemas import Run
from b24bridge.runs.service import RunLog

from .registry import Robot
from .schemas import RetryRun

log = get_logger(__name__)

MAX_ATTEMPTS = 5
# Time kept before a robot's timeout to send the (error) answer, so the workflow never closes by timeout.
ANSWER_RESERVE = dt.timedelta(seconds=5)


@dataclass(frozen=True)
class _RunContext:
    """What a robot's work sees of its run (the ``RunContext`` protocol of :mod:`.registry`)."""

    portal: Portal
    observer: CallObserver
    origin_id: str
    repeated: bool

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.portal.call(method, params, observer=self.observer)


def origin_id(run: Run) -> str:
    """Stable across attempts and unique per robot call: what ORIGIN_ID carries to find a run's own records."""
    event = hashlib.sha256(run.event_token.encode()).hexdigest()[:16]
    return f"run:{run.member_id}:{run.workflow_id}:{event}"


class RobotRunner:
    def __init__(self, registry: PortalRegistry, runs: RunLog, robots: Mapping[str, Robot]) -> None:
        self.registry = registry
        self.runs = runs
        self.robots = robots

    async def execute(self, run_id: int) -> None:
        run = await self.runs.begin_attempt(run_id)
        if run is None:
            log.warning("robots.run_missing", run_id=run_id)
            return
        if run.answered_at is not None:
            return  # a duplicate job or a re-run after the answer: nothing left to do
        if not run.final:
            run = await self._work(run)
        await self._answer(run)

    async def _work(self, run: Run) -> Run:
        robot = self.robots.get(run.robot_code)
        if robot is None or robot.perform is None:
            return await self.runs.finish(run.id, "failed", error=f"robot {run.robot_code!r} is no longer declared")
        budget = _time_left(run)
        try:
            portal = await self.registry.connect(run.member_id)
            context = _RunContext(portal, self.runs.recorder(run.id), origin_id(run), repeated=run.attempts > 1)
            async with asyncio.timeout(budget.total_seconds() if budget is not None else None):
                outcome = await robot.perform(context, dict(run.inputs.get("values") or {}))
        except BitrixError as exc:
            if (exc.retryable or exc.uncertain) and run.attempts < MAX_ATTEMPTS and _may_retry(run):
                await self.runs.requeue(run.id, str(exc))
                log.info("robots.run_retry", run_id=run.id, attempt=run.attempts, error=str(exc))
                raise RetryRun(str(exc)) from None
            return await self.runs.finish(run.id, "uncertain" if exc.uncertain else "failed", error=str(exc))
        except TimeoutError:
            # A write may have been in flight; the answer must go now, before the robot's own timeout.
            return await self.runs.finish(run.id, "uncertain", error="no time left before the robot's timeout")
        except Exception as exc:  # a bug or an unusable portal: recorded and answered, never left hanging
            log.exception("robots.run_crashed", run_id=run.id)
            return await self.runs.finish(run.id, "failed", error=f"{type(exc).__name__}: {exc}")
        outcome_values = {"values": outcome.values, "message": outcome.message}
        return await self.runs.finish(run.id, "succeeded", outcome=outcome_values)

    async def _answer(self, run: Run) -> None:
        if str(run.inputs.get("use_subscription", "Y")) == "N":
            await self.runs.mark_answered(run.id)  # the workflow does not wait for us
            return
        if run.status == "succeeded" and run.outcome is not None:
            values, message = dict(run.outcome.get("values") or {}), str(run.outcome.get("message") or "")
        else:
            values, message = {}, f"b24bridge: {run.error or 'the robot failed'}"
        params = {"EVENT_TOKEN": run.event_token, "RETURN_VALUES": values, "LOG_MESSAGE": message}
        try:
            portal = await self.registry.connect(run.member_id)
            await portal.call("bizproc.event.send", params, observer=self.runs.recorder(run.id))
        except BitrixError as exc:
            # event.send is idempotent (a second send is ignored by the workflow), so any unclear failure retries.
            if (exc.retryable or exc.uncertain) and _may_retry(run):
                raise RetryRun(f"answer: {exc}") from None
            log.warning("robots.answer_failed", run_id=run.id, error=str(exc))
            await self.runs.mark_answered(run.id, error=f"{run.error + '; ' if run.error else ''}answer failed: {exc}")
            return
        except Exception as exc:
            log.warning("robots.answer_failed", run_id=run.id, error=f"{type(exc).__name__}: {exc}")
            await self.runs.mark_answered(run.id, error=f"answer failed: {type(exc).__name__}: {exc}")
            return
        await self.runs.mark_answered(run.id)


def _time_left(run: Run) -> dt.timedelta | None:
    if run.deadline_at is None:
        return None
    return max(run.deadline_at - dt.datetime.now(dt.UTC) - ANSWER_RESERVE, dt.timedelta(0))


def _may_retry(run: Run) -> bool:
    """Another attempt only if it can still finish before the robot's timeout (first backoff is short)."""
    left = _time_left(run)
    return left is None or left > dt.timedelta(seconds=10)
