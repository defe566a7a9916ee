"""The run log: one owner for the life of every run (opened, attempted, its calls recorded, finished, answered).

Robots (and the bridge) record through :class:`RunLog` only; nothing else writes the ``runs`` tables.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from b24bridge.bitrix import CallObserver, CallRecord
from b24bridge.observability import get_logger

from . import metrics, repository
from .repository import Conn
from .schemas import STATUSES, NewRun, Revived, Run, RunCall, RunFilter

log = get_logger(__name__)

MAX_LISTED = 10_000


class RunLog:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def open(self, conn: Conn, run: NewRun) -> int | None:
        """Store a new run on the caller's connection (inside its transaction, beside the run's job).

        None when the same call was stored before: the portal delivered it twice.
        """
        return await repository.insert(conn, run)

    async def begin_attempt(self, run_id: int) -> Run | None:
        async with self.pool.connection() as conn:
            return await repository.start_attempt(conn, run_id)

    async def finish(
        self,
        run_id: int,
        status: str,
        *,
        outcome: dict[str, Any] | None = None,
        error: str | None = None,
        answered: bool = False,
    ) -> Run:
        async with self.pool.connection() as conn:
            run = await repository.finish(conn, run_id, status, outcome, error, answered=answered)
        if run is None:
            raise LookupError(f"run {run_id} does not exist")
        metrics.RUNS_FINISHED.labels(run.kind, status).inc()
        if run.finished_at is not None:
            metrics.RUN_LATENCY.labels(run.kind, status).observe((run.finished_at - run.created_at).total_seconds())
        return run

    async def mark_dead(self, run_id: int, reason: str) -> None:
        """Given up: visible as ``dead`` with its reason, counted, and revivable (:meth:`revive`)."""
        async with self.pool.connection() as conn:
            kind = await repository.mark_dead(conn, run_id, reason)
        if kind is not None:
            metrics.RUNS_DEAD.labels(kind).inc()
        log.error("runs.dead", run_id=run_id, reason=reason)

    async def retry_scheduled(self, run: Run, error: str, pause: float) -> None:
        """A temporary failure: the run waits ``pause`` seconds for its next attempt, its error kept."""
        async with self.pool.connection() as conn:
            await repository.requeue(conn, run.id, error)
        metrics.RUN_RETRIES.labels(run.kind).inc()
        log.info("runs.retry_scheduled", run_id=run.id, kind=run.kind, error=error, pause=round(pause, 1))

    async def revive(self, conn: Conn, run_ids: list[int]) -> list[Revived]:
        """Dead runs back in, on the caller's connection (beside their new jobs); those that were dead."""
        return await repository.revive(conn, run_ids)

    async def mark_answered(self, run_id: int, error: str | None = None) -> None:
        async with self.pool.connection() as conn:
            await repository.mark_answered(conn, run_id, error)

    def recorder(self, run_id: int) -> CallObserver:
        """A client observer that writes each finished call of the run to ``run_calls``."""

        async def record(call: CallRecord) -> None:
            async with self.pool.connection() as conn:
                await repository.record_call(conn, run_id, call.method, call.outcome, call.duration, call.error)

        return record

    async def get(self, run_id: int) -> Run | None:
        async with self.pool.connection() as conn:
            return await repository.get(conn, run_id)

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
