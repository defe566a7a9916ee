"""Group commit: calls that arrive together are stored in one transaction, and each caller hears of its own row only
after the commit that holds it.

Storing a robot call alone costs a connection checkout, three statements and a commit (an fsync on the server); under
load most of that is waiting. Here a call joins the pending group and, if fewer than ``flushers`` groups are being
stored, a flush starts at once: a lone call waits for nobody. While flushes are under way new calls gather, and the
next flush takes them all (up to ``max_group``), so the cost of a commit is shared by as many calls as arrived
during the last one. A duplicate or a coalesced call is an answer for that call only; a failure of the statement
or the commit is the failure of the whole group, and each of its callers decides what to do (the intake spools).
The grouping is :class:`b24bridge.coalesce.Coalescer`'s, with no split of a failed group and a deadline per group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from psycopg_pool import AsyncConnectionPool

from b24bridge.coalesce import Coalescer

from . import repository
from .metrics import GROUP_SIZE
from .schemas import Stored, Submission

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
        self.pool = pool
        self.connect_timeout = connect_timeout
        self._groups: Coalescer[Submission, Stored] = Coalescer(
            self._store_group, max_group=max_group, flushers=flushers, split=False, timeout=commit_timeout
        )

    def submit(self, submission: Submission) -> asyncio.Future[Stored]:
        """The future of ``submission``'s answer: set once the commit holding its row is done, or failed with the
        group's error (the row is then not stored, or not known to be). A caller that stops waiting (it spooled the
        call instead) leaves the future to be settled and read by the group."""
        return self._groups.submit(submission)

    async def store(self, submissions: Sequence[Submission]) -> list[Stored]:
        """Store ``submissions`` in one transaction of their own (the spool's drain); raises what the database does."""
        async with self.pool.connection(timeout=self.connect_timeout) as conn, conn.transaction():
            return await repository.store(conn, submissions)

    async def _store_group(self, submissions: list[Submission]) -> list[Stored]:
        GROUP_SIZE.observe(len(submissions))
        return await self.store(submissions)

    async def aclose(self) -> None:
        """Let the commits under way finish (shutdown)."""
        await self._groups.aclose()
