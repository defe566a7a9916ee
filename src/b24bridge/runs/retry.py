"""How a run's job is tried again: when and how often the run's retry schedule says, and after interruptions.

Robots and the bridge run their runs as procrastinate jobs through :func:`guarded` with :class:`AsTheRunSays` as the
retry strategy, so the job engine keeps no count of attempts of its own: the run log's schedule is the one count.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

import procrastinate
import psycopg
from psycopg_pool import PoolTimeout

from b24bridge.observability import get_logger

from .schemas import RetrySchedule

log = get_logger(__name__)

# A run interrupted by the database going away tries again after this long.
DATABASE_PAUSE = 2.0


class RetryRun(Exception):
    """The run met a temporary failure; its job runs again after ``pause`` seconds (from the retry schedule)."""

    def __init__(self, message: str, pause: float) -> None:
        super().__init__(message)
        self.pause = pause


class AsTheRunSays(procrastinate.BaseRetryStrategy):
    """Retry exactly when the runner says (``RetryRun.pause``), and only then."""

    def get_retry_decision(
        self, *, exception: BaseException, job: procrastinate.jobs.Job
    ) -> procrastinate.RetryDecision | None:
        if isinstance(exception, RetryRun):
            pause = dt.timedelta(seconds=max(0.0, exception.pause))
            return procrastinate.RetryDecision(retry_at=dt.datetime.now(dt.UTC) + pause)
        return None


async def guarded(execute: Callable[[int], Awaitable[None]], run_id: int) -> None:
    """Run a run's job; an interruption (the database gone mid-run, the worker shutting down) sends it back to the
    queue. The re-run finds what this attempt did (the id map, ORIGIN_ID; an answer a workflow already has is
    ignored), so nothing is done twice."""
    try:
        await execute(run_id)
    except (psycopg.Error, PoolTimeout, procrastinate.exceptions.ConnectorException) as exc:
        log.warning("runs.database_error", run_id=run_id, error=type(exc).__name__)
        raise RetryRun(f"database unavailable ({type(exc).__name__})", pause=DATABASE_PAUSE) from None
    except asyncio.CancelledError:
        log.info("runs.interrupted", run_id=run_id)
        raise RetryRun("worker shut down during the run", pause=0.0) from None


def next_pause(schedule: RetrySchedule, attempts: int, jitter: float, time_left: dt.timedelta | None) -> float | None:
    """The pause before the next attempt, or None when the schedule (or the time before a deadline) is spent."""
    pause = schedule.pause_after(attempts, jitter)
    if pause is None or (time_left is not None and dt.timedelta(seconds=pause) >= time_left):
        return None
    return pause
