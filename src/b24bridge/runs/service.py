"""The run log: one owner for the life of every run (opened, attempted, its calls recorded, finished, answered).

Robots (and the bridge) record through :class:`RunLog` only; nothing else writes the ``runs`` tables.
"""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg_pool import AsyncConnectionPool

from b24bridge.bitrix import CallObserver, CallRecord
from b24bridge.coalesce import Coalescer
from b24bridge.db import DATABASE_AWAY
from b24bridge.observability import get_logger

from . import metrics, repository
from .repository import Conn, Ending
from .schemas import STATUSES, NewRun, Revived, Run, RunCall, RunFilter

log = get_logger(__name__)

MAX_LISTED = 10_000


MAX_CALLS_PER_WRITE = 500


class RunLog:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._calls: list[tuple[int, str, str, float, str | None]] = []
        self._writing = False
        self._writers: set[asyncio.Task[None]] = set()
        # A batch's answer wakes the runs it carried at once: their starts, and their ends, go as one statement each.
        self._starts = Coalescer(self._start_attempts, distinct=lambda run_id: run_id)
        self._ends: Coalescer[Ending, Run | None] = Coalescer(self._finish, distinct=lambda ending: ending[0])

    async def open(self, conn: Conn, run: NewRun) -> int | None:
        """Store a new run on the caller's connection (inside its transaction, beside the run's job).

        None when the same call was stored before: the portal delivered it twice.
        """
        return await repository.insert(conn, run)

    async def begin_attempt(self, run_id: int) -> Run | None:
        return await self._starts(run_id)

    async def _start_attempts(self, run_ids: list[int]) -> list[Run | None]:
        async with self.pool.connection() as conn:
            return await repository.start_attempts(conn, run_ids)

    async def _finish(self, endings: list[Ending]) -> list[Run | None]:
        async with self.pool.connection() as conn:
            return await repository.finish(conn, endings)

    async def finish(
        self,
        run_id: int,
        status: str,
        *,
        outcome: dict[str, Any] | None = None,
        error: str | None = None,
        answered: bool = False,
    ) -> Run:
        await self.flush_calls()  # a run's calls are in the log before its end is
        run = await self._ends((run_id, status, outcome, error, answered))
        if run is None:
            raise LookupError(f"run {run_id} does not exist")
        metrics.RUNS_FINISHED.labels(run.kind, status).inc()
        if run.finished_at is not None:
            metrics.RUN_LATENCY.labels(run.kind, status).observe((run.finished_at - run.created_at).total_seconds())
        return run

    async def mark_dead(self, run_id: int, reason: str) -> None:
        """Given up: visible as ``dead`` with its reason, counted, and revivable (:meth:`revive`)."""
        await self.flush_calls()  # a run's calls are in the log before its end is
        async with self.pool.connection() as conn:
            kind = await repository.mark_dead(conn, run_id, reason)
        if kind is not None:
            metrics.RUNS_DEAD.labels(kind).inc()
        log.error("runs.dead", run_id=run_id, reason=reason)

    async def retry_scheduled(self, run: Run, error: str, pause: float) -> None:
        """A temporary failure: the run waits ``pause`` seconds for its next attempt, its error kept."""
        await self.flush_calls()  # a run's calls are in the log before its end is
        async with self.pool.connection() as conn:
            await repository.requeue(conn, run.id, error)
        metrics.RUN_RETRIES.labels(run.kind).inc()
        log.info("runs.retry_scheduled", run_id=run.id, kind=run.kind, error=error, pause=round(pause, 1))

    async def revive(self, conn: Conn, run_ids: list[int]) -> list[Revived]:
        """Dead runs back in, on the caller's connection (beside their new jobs); those that were dead."""
        return await repository.revive(conn, run_ids)

    async def mark_answered(self, run_id: int, error: str | None = None) -> None:
        await self.flush_calls()  # a run's calls are in the log before its end is
        async with self.pool.connection() as conn:
            await repository.mark_answered(conn, run_id, error)

    def recorder(self, run_id: int) -> CallObserver:
        """A client observer that writes each finished call of the run to ``run_calls`` (see :meth:`_write_calls`)."""

        async def record(call: CallRecord) -> None:
            self._calls.append((run_id, call.method, call.outcome, call.duration, call.error))
            if not self._writing:
                self._writing = True
                task = asyncio.get_running_loop().create_task(self._write_calls())
                self._writers.add(task)
                task.add_done_callback(self._writers.discard)

        return record

    async def _write_calls(self) -> None:
        """The calls recorded so far, in one statement; those recorded meanwhile in the next.

        A call is written as soon as nothing else is being written (a lone run's calls are in the log at once), and
        under load the calls of many runs share a statement: one round trip each was a good part of what a robot run
        cost the worker. The run log is the record of what was done, not what makes it happen: a call record that
        cannot be written (the database away) is dropped with a log line, never retried into a growing backlog.
        """
        try:
            while self._calls:
                batch, self._calls = self._calls[:MAX_CALLS_PER_WRITE], self._calls[MAX_CALLS_PER_WRITE:]
                try:
                    async with self.pool.connection(timeout=5.0) as conn:
                        await repository.record_calls(conn, batch)
                except DATABASE_AWAY as exc:
                    log.warning("runs.calls_not_recorded", calls=len(batch), error=type(exc).__name__)
        finally:
            self._writing = False

    async def flush_calls(self) -> None:
        """Wait until every call recorded so far is written (shutdown, tests)."""
        while self._writers or self._calls:
            if self._writers:
                await asyncio.gather(*self._writers, return_exceptions=True)
            elif self._calls:
                self._writing = True
                await self._write_calls()

    async def get(self, run_id: int) -> Run | None:
        async with self.pool.connection() as conn:
            return await repository.get(conn, run_id)

    async def by_intake_key(self, intake_key: str) -> Run | None:
        """The run a call was accepted as (its intake key: an inbound POST's Idempotency-Key, say)."""
        async with self.pool.connection() as conn:
            return await repository.by_intake_key(conn, intake_key)

    async def list_runs(self, where: RunFilter | None = None, limit: int = 50) -> list[Run]:
        where = where or RunFilter()
        if where.status is not None and where.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        async with self.pool.connection() as conn:
            return await repository.list_runs(conn, where, max(1, min(limit, MAX_LISTED)))

    async def count_by_status(self, where: RunFilter | None = None) -> dict[str, int]:
        """Runs matching ``where`` per status, every status present (0 for none)."""
        async with self.pool.connection() as conn:
            counted = await repository.count_by_status(conn, where or RunFilter())
        return {status: counted.get(status, 0) for status in STATUSES}

    async def show(self, run_id: int) -> tuple[Run, list[RunCall]] | None:
        async with self.pool.connection() as conn:
            run = await repository.get(conn, run_id)
            return None if run is None else (run, await repository.calls(conn, run_id))
