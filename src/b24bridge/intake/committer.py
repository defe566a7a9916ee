"""Group commit: calls that arrive together are stored in one transaction, and each caller hears of its own row only
after the commit that holds it.

Storing a robot call alone costs a connection checkout, three statements and a commit (an fsync on the server); under
load most of that is waiting. Here a call joins the pending group and, if fewer than ``flushers`` groups are being
stored, a flush starts at once: a lone call waits for nobody. While flushes are under way new calls gather, and the
next flush takes them all (up to ``max_group``), so the cost of a commit is shared by as many calls as arrived
during the last one. A duplicate or a coalesced call is an answer for that call only; a failure of the statement
or the commit is the failure of the whole group, and each of its callers decides what to do (the intake spools).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from psycopg_pool import AsyncConnectionPool

from b24bridge.observability import get_logger

from . import repository
from .metrics import GROUP_SIZE
from .schemas import Stored, Submission

log = get_logger(__name__)

MAX_GROUP = 500
# Groups being stored at once: with one, a call that just missed a commit waits for it and then for its own; three
# keep the database busy (bench/ingest.py, external PostgreSQL: 2 flushers 1,924 calls/s p99 51 ms, 3: 2,302/s p99
# 48 ms, 4: no better).
FLUSHERS = 3
# Longer than any commit takes on a working database, short enough that the portal is answered in time: a group
# not committed by then is answered with TimeoutError (its commit may still land; the spool's copy is then a
# duplicate of it, by its intake key).
COMMIT_TIMEOUT = 3.0
# A checkout that takes longer means the database is not there: the intake spools instead of waiting the pool's
# full timeout while the portal waits for its answer.
CONNECT_TIMEOUT = 1.0

_Waiting = tuple[Submission, "asyncio.Future[Stored]"]


def _expire(group: list[_Waiting]) -> None:
    for _, future in group:
        if not future.done():
            future.set_exception(TimeoutError("the commit did not answer in time"))


def _retrieve(future: asyncio.Future[Stored]) -> None:
    if not future.cancelled():
        future.exception()


class GroupCommit:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        max_group: int = MAX_GROUP,
        flushers: int = FLUSHERS,
        connect_timeout: float = CONNECT_TIMEOUT,
        commit_timeout: float = COMMIT_TIMEOUT,
    ) -> None:
        self.commit_timeout = commit_timeout
        self.pool = pool
        self.max_group = max_group
        self.flushers = flushers
        self.connect_timeout = connect_timeout
        self._pending: list[_Waiting] = []
        self._flushing = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, submission: Submission) -> asyncio.Future[Stored]:
        """The future of ``submission``'s answer: set once the commit holding its row is done, or failed with the
        group's error (the row is then not stored, or not known to be)."""
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        # A caller that stopped waiting (it spooled the call instead) never reads a late failure: read it here.
        future.add_done_callback(_retrieve)
        self._pending.append((submission, future))
        if self._flushing < self.flushers:
            self._flushing += 1
            task = asyncio.get_running_loop().create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    async def store(self, submissions: Sequence[Submission]) -> list[Stored]:
        """Store ``submissions`` in one transaction of their own (the spool's drain); raises what the database does."""
        async with self.pool.connection(timeout=self.connect_timeout) as conn, conn.transaction():
            return await repository.store(conn, submissions)

    async def _flush(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending[: self.max_group], self._pending[self.max_group :]
                GROUP_SIZE.observe(len(group))
                watchdog = asyncio.get_running_loop().call_later(self.commit_timeout, _expire, group)
                try:
                    answers = await self.store([submission for submission, _ in group])
                except BaseException as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                    if not isinstance(exc, Exception):
                        raise
                    continue
                finally:
                    watchdog.cancel()
                for (_, future), answer in zip(group, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._flushing -= 1

    async def aclose(self) -> None:
        """Let the flushes under way finish (shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
