"""The run log: runs listed and shown, and every outbound call of a run recorded as it happens."""

from __future__ import annotations

import time
from typing import Any

from b24bridge.bitrix import BitrixError, Portal
from b24bridge.observability import get_logger

from . import repository
from .schemas import STATUSES, Run, RunCall

log = get_logger(__name__)


class RecordingPortal:
    """A portal connection whose calls are written to ``run_calls`` (method, outcome, duration, error).

    Only ``call`` is offered: a robot's work is a few single calls, which the client batches with other runs.
    """

    def __init__(self, portal: Portal, run_id: int) -> None:
        self.portal = portal
        self.run_id = run_id

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        started = time.monotonic()
        try:
            result = await self.portal.call(method, params)
        except BitrixError as exc:
            status = "uncertain" if exc.uncertain else "error"
            await repository.record_call(self.run_id, method, status, time.monotonic() - started, str(exc))
            raise
        await repository.record_call(self.run_id, method, "ok", time.monotonic() - started, None)
        return result


async def list_runs(member_id: str | None = None, status: str | None = None, limit: int = 50) -> list[Run]:
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    return await repository.list_runs(member_id, status, max(1, min(limit, 10_000)))


async def show_run(run_id: int) -> tuple[Run, list[RunCall]] | None:
    run = await repository.get(run_id)
    if run is None:
        return None
    return run, await repository.calls(run_id)
