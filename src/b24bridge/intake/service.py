"""The intake: every accepted call is stored, or kept in the spool until it can be, and each is stored once.

A call goes to the group commit (:mod:`.committer`). If the database cannot take it (unreachable, a checkout that
times out, a commit whose answer does not come) the call is appended to the spool (:mod:`.spool`) under the same
intake key and answered as stored: it is on disk. From then on this process spools every call until its spool is
drained, so the calls of one record keep their order. The drainer (:meth:`Intake.drain_forever`) stores spooled
calls through the same SQL, oldest first, the spools of processes that have gone included; a call whose commit had
in fact landed meets its own intake key and is a duplicate, so nothing is stored twice. Records other than calls
(an installation, an uninstallation) are handed to the handler registered for their kind, in order.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import psycopg

from b24bridge.db import DATABASE_AWAY
from b24bridge.observability import get_logger
from b24bridge.portals.schemas import Check

from .committer import GroupCommit
from .metrics import SPOOL_DRAINED
from .schemas import Stored, Submission
from .spool import Segment, Spool, SpoolUnavailable

log = get_logger(__name__)

DRAIN_INTERVAL = 1.0
DRAIN_CHUNK = 200

Handler = Callable[[dict[str, Any]], Awaitable[None]]
Verify = Callable[[Check], Awaitable[bool]]
Probe = Callable[[], Awaitable[None]]

__all__ = ["Intake", "IntakeUnavailable"]


class IntakeUnavailable(Exception):
    """Neither the database nor the spool could take the call: nothing was kept (the door answers 503)."""


class Intake:
    def __init__(
        self,
        committer: GroupCommit,
        spool: Spool,
        *,
        verify: Verify,
        probe: Probe,
        handlers: Mapping[str, Handler] | None = None,
    ) -> None:
        self.committer = committer
        self.spool = spool
        self.verify = verify
        self.probe = probe
        self.handlers = dict(handlers or {})
        self._spooling = False
        self._wake = asyncio.Event()

    @property
    def spooling(self) -> bool:
        """Calls go to the spool (the database was away, and this process's spool is not drained yet)."""
        return self._spooling

    def handle(self, kind: str, handler: Handler) -> None:
        """Who applies spooled records of ``kind`` (wired by the composition root)."""
        self.handlers[kind] = handler

    async def accept(self, submission: Submission) -> Stored:
        """Store ``submission``, or keep it in the spool; :class:`IntakeUnavailable` if neither could be done."""
        if not self._spooling and submission.check is None:
            try:
                return await self.committer.submit(submission)
            except DATABASE_AWAY as exc:
                self._away(exc)
        await self.keep("run", {"submission": submission.to_json()})
        return Stored("spooled")

    async def keep(self, kind: str, payload: dict[str, Any]) -> None:
        """Keep a record in the spool for its handler; raises :class:`IntakeUnavailable` if it cannot be written."""
        try:
            await self.spool.append(orjson.dumps({"kind": kind, **payload}))
        except SpoolUnavailable as exc:
            log.error("intake: a call could not be kept", kind=kind, error=str(exc))
            raise IntakeUnavailable(str(exc)) from None
        self._away(None)

    def _away(self, exc: BaseException | None) -> None:
        if not self._spooling:
            reason = type(exc).__name__ if exc is not None else "a record was spooled"
            log.warning("intake: the database cannot take calls; spooling them", reason=reason)
        self._spooling = True
        self._wake.set()

    # --- draining ---------------------------------------------------------------------------------------------------

    async def drain_forever(self, interval: float = DRAIN_INTERVAL) -> None:
        """Drain whenever there is something to drain: at start (spools left by processes that have gone), after a
        call was spooled, and every ``interval`` seconds."""
        while True:
            try:
                await self.drain()
            except DATABASE_AWAY:
                pass  # still away: the next round tries again
            except Exception:
                log.exception("intake: draining the spool failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
                await asyncio.sleep(interval / 4)  # the database just failed: give it a moment before asking
            except TimeoutError:
                pass

    async def drain(self) -> int:
        """Store what the spools hold (orphans first, then this process's); the number of records drained."""
        drained = 0
        for segment in await asyncio.to_thread(self.spool.orphans):
            try:
                drained += await self._drain_segment(segment)
            except BaseException:
                await asyncio.to_thread(_let_go, segment)  # another round (or process) takes it again
                raise
        own = self.spool.own()
        if own is not None:
            drained += await self._drain_segment(own)
        if self._spooling and not self.spool.busy:
            await self.probe()  # raises while the database is still away
            if not self.spool.busy:
                self._spooling = False
                log.info("intake: the database takes calls again; the spool is drained", drained=drained)
        return drained

    async def _drain_segment(self, segment: Segment) -> int:
        drained = 0
        while True:
            records = await asyncio.to_thread(self.spool.read, segment, DRAIN_CHUNK)
            if not records:
                break
            await self._apply([payload for _, payload in records if payload is not None])
            self.spool.advance(segment, records[-1][0], len(records))
            drained += len(records)
        await asyncio.to_thread(self.spool.release, segment)
        return drained

    async def _apply(self, payloads: list[bytes]) -> None:
        """Apply records in order: runs a group at a time, every other record by its handler."""
        runs: list[Submission] = []
        for payload in payloads:
            record = orjson.loads(payload)
            if record.get("kind") == "run":
                runs.append(Submission.from_json(record["submission"]))
                continue
            await self._store_runs(runs)
            runs = []
            await self._apply_other(record)
        await self._store_runs(runs)

    async def _store_runs(self, runs: list[Submission]) -> None:
        if not runs:
            return
        checked = []
        for submission in runs:
            if submission.check is not None and not await self.verify(submission.check):
                log.warning(
                    "spool: a call whose portal did not prove itself was dropped", member_id=submission.run.member_id
                )
                SPOOL_DRAINED.labels("refused").inc()
                continue
            checked.append(submission)
        try:
            answers = await self.committer.store(checked)
        except DATABASE_AWAY:
            raise
        except psycopg.Error:
            # One record the database refuses must not hold the others back: store them one by one.
            answers = [await self._store_alone(submission) for submission in checked]
        for answer in answers:
            SPOOL_DRAINED.labels(answer.outcome).inc()

    async def _store_alone(self, submission: Submission) -> Stored:
        try:
            [answer] = await self.committer.store([submission])
        except DATABASE_AWAY:
            raise
        except psycopg.Error as exc:
            log.error(
                "spool: a call the database refuses was dropped", intake_key=submission.intake_key, error=str(exc)
            )
            return Stored("refused")
        return answer

    async def _apply_other(self, record: dict[str, Any]) -> None:
        kind = str(record.get("kind"))
        handler = self.handlers.get(kind)
        if handler is None:
            log.error("spool: a record of an unknown kind was dropped", kind=kind)
            SPOOL_DRAINED.labels("failed").inc()
            return
        try:
            await handler(record)
        except DATABASE_AWAY:
            raise
        except Exception:
            log.exception("spool: a record could not be applied and was dropped", kind=kind)
            SPOOL_DRAINED.labels("failed").inc()
            return
        SPOOL_DRAINED.labels("applied").inc()


def _let_go(segment: Segment) -> None:
    os.close(segment.fd)
