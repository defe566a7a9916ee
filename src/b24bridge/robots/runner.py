"""Running a robot call (the job's work): the robot's calls, its outcome, and the answer to the workflow.

Every accepted call whose workflow waits ends with ``bizproc.event.send`` (the robot's result, or its error) or,
only after the whole retry schedule (``B24BRIDGE_RETRY_SCHEDULE``, about a day by default) or past the robot's own
timeout, as a visible ``dead`` run that ``b24bridge runs answer`` can take back in. A robot whose work ends with a
write (:class:`~.registry.FinalWrite`) sends that write and the answer in one request (a chain), so a run costs
one round trip; a repeated attempt first looks for what an earlier one wrote (ORIGIN_ID) and answers alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from b24bridge.bitrix import BitrixError, CallObserver, Portal
from b24bridge.observability import get_logger
from b24bridge.portals.service import PortalRegistry
from b24bridge.runs.retry import RetryRun, next_pause
from b24bridge.runs.schemas import RetrySchedule, Run
from b24bridge.runs.service import RunLog

from .registry import WRITE_RESULT, Outcome, Robot

log = get_logger(__name__)

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
    event = hashlib.sha256((run.event_token or "").encode()).hexdigest()[:16]
    return f"run:{run.member_id}:{run.workflow_id}:{event}"


def _waits(run: Run) -> bool:
    return str(run.inputs.get("use_subscription", "Y")) != "N"


def _answer_params(run: Run, outcome: Outcome | None) -> dict[str, Any]:
    if outcome is not None:
        values, message = outcome.values, outcome.message
    else:
        values, message = {}, f"b24bridge: {run.error or 'the robot failed'}"
    return {"EVENT_TOKEN": run.event_token, "RETURN_VALUES": values, "LOG_MESSAGE": message}


class RobotRunner:
    def __init__(
        self,
        registry: PortalRegistry,
        runs: RunLog,
        robots: Mapping[str, Robot],
        schedule: RetrySchedule,
        rng: random.Random | None = None,
    ) -> None:
        self.registry = registry
        self.runs = runs
        self.robots = robots
        self.schedule = schedule
        self.rng = rng or random.Random()

    async def execute(self, run_id: int) -> None:
        run = await self.runs.begin_attempt(run_id)
        if run is None:
            log.warning("robots.run_missing", run_id=run_id)
            return
        # The log lines of this attempt carry the robot call's correlation id (and the run's id).
        with structlog.contextvars.bound_contextvars(correlation_id=run.inputs.get("correlation_id"), run_id=run.id):
            await self._attempt(run)

    async def _attempt(self, run: Run) -> None:
        if run.answered_at is not None or run.status == "dead":
            return  # a duplicate job or a re-run after the answer: nothing left to do
        if not run.final:
            run = await self._work(run)
            if run.answered_at is not None:
                return  # the answer travelled with the final write
        await self._answer(run)

    # --- the work -------------------------------------------------------------------------------------------

    async def _work(self, run: Run) -> Run:
        robot = self.robots.get(run.robot_code or "")
        if robot is None or robot.perform is None:
            return await self.runs.finish(run.id, "failed", error=f"robot {run.robot_code!r} is no longer declared")
        budget = _time_left(run)
        try:
            portal = await self.registry.connect(run.member_id)
            recorder = self.runs.recorder(run.id)
            context = _RunContext(portal, recorder, origin_id(run), repeated=run.attempts > 1)
            async with asyncio.timeout(budget.total_seconds() if budget is not None else None):
                outcome = await robot.perform(context, dict(run.inputs.get("values") or {}))
                if outcome.write is not None:
                    return await self._finish_with_write(run, portal, recorder, outcome)
        except BitrixError as exc:
            if exc.retryable or exc.uncertain:
                await self._retry_later(run, str(exc))
            return await self.runs.finish(run.id, "uncertain" if exc.uncertain else "failed", error=str(exc))
        except TimeoutError:
            # A write may have been in flight; the answer must go now, before the robot's own timeout.
            return await self.runs.finish(run.id, "uncertain", error="no time left before the robot's timeout")
        except RetryRun:
            raise
        except Exception as exc:  # a bug or an unusable portal: recorded and answered, never left hanging
            log.exception("robots.run_crashed", run_id=run.id)
            return await self.runs.finish(run.id, "failed", error=f"{type(exc).__name__}: {exc}")
        return await self.runs.finish(run.id, "succeeded", outcome=_stored(outcome))

    async def _finish_with_write(self, run: Run, portal: Portal, recorder: CallObserver, outcome: Outcome) -> Run:
        """The final write, and (when the workflow waits) the answer referring to its result, in one request."""
        assert outcome.write is not None
        write = ("write", outcome.write.method, outcome.write.params)
        if not _waits(run):
            result = await portal.call(write[1], write[2], observer=recorder)
            return await self.runs.finish(run.id, "succeeded", outcome=_stored(outcome.completed(result)))
        values = {k: "$result[write]" if v is WRITE_RESULT else v for k, v in outcome.values.items()}
        answer = _answer_params(run, Outcome(values, outcome.message))
        results = await portal.chain([write, ("answer", "bizproc.event.send", answer)], observer=recorder)
        written = results["write"].unwrap()  # a failed write: the answer never ran (halt)
        answered = results["answer"].error is None
        return await self.runs.finish(
            run.id, "succeeded", outcome=_stored(outcome.completed(written)), answered=answered
        )

    # --- the answer -----------------------------------------------------------------------------------------

    async def _answer(self, run: Run) -> None:
        if not _waits(run):
            await self.runs.mark_answered(run.id)  # the workflow does not wait for us
            return
        if run.deadline_at is not None and run.deadline_at <= dt.datetime.now(dt.UTC):
            await self.runs.mark_dead(
                run.id, f"the workflow's timeout passed before it could be answered ({run.error})"
            )
            return
        outcome = _loaded(run.outcome)
        try:
            portal = await self.registry.connect(run.member_id)
            await portal.call("bizproc.event.send", _answer_params(run, outcome), observer=self.runs.recorder(run.id))
        except BitrixError as exc:
            # event.send is idempotent (a second send is ignored by the workflow), so any unclear failure retries.
            if exc.retryable or exc.uncertain:
                await self._retry_later(run, f"answer: {exc}", keep_status=True)
            await self.runs.mark_dead(run.id, f"the answer was refused: {exc}")
            return
        except RetryRun:
            raise
        except Exception as exc:
            log.exception("robots.answer_crashed", run_id=run.id)
            await self.runs.mark_dead(run.id, f"the answer failed: {type(exc).__name__}: {exc}")
            return
        await self.runs.mark_answered(run.id)

    async def _retry_later(self, run: Run, error: str, *, keep_status: bool = False) -> None:
        """Raise :class:`RetryRun` with the schedule's next pause; return if the schedule (or the time) is spent."""
        pause = next_pause(self.schedule, run.attempts, self.rng.uniform(-1.0, 1.0), _time_left(run))
        if pause is None:
            return
        if keep_status:
            log.info("robots.answer_retry", run_id=run.id, attempt=run.attempts, error=error, pause=round(pause, 1))
        else:
            await self.runs.retry_scheduled(run, error, pause)
        raise RetryRun(error, pause)


def _stored(outcome: Outcome) -> dict[str, Any]:
    return {"values": outcome.values, "message": outcome.message}


def _loaded(stored: dict[str, Any] | None) -> Outcome | None:
    if stored is None:
        return None
    return Outcome(dict(stored.get("values") or {}), str(stored.get("message") or ""))


def _time_left(run: Run) -> dt.timedelta | None:
    if run.deadline_at is None:
        return None
    return max(run.deadline_at - dt.datetime.now(dt.UTC) - ANSWER_RESERVE, dt.timedelta(0))
