"""One token refresh per portal across every process that shares the database.

Bitrix24 answers a refresh with a new refresh token, and the old one is to be dropped (REFERENCE 4.2): two
processes refreshing one portal at once could leave one of them holding a token the OAuth server no longer takes.
Redis, when configured, serialises refreshes; this lock does it with what every deployment has, a PostgreSQL
transaction-level advisory lock, and is Redis' fallback while Redis fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg_pool import AsyncConnectionPool

# Keeps advisory locks of this kind apart from any other user of pg_advisory locks in the same database.
_NAMESPACE = "b24bridge:refresh:"


class DatabaseRefreshLock:
    """``pg_advisory_xact_lock`` on the portal's key, held for the refresh and released when its transaction ends
    (a killed process's lock goes with its connection).

    The holder needs more connections while it holds one (to read and save tokens), so at most ``share`` of the
    pool is ever spent on holding locks: refreshes of many portals at once cannot starve the pool.
    """

    def __init__(self, pool: AsyncConnectionPool, share: float = 0.25) -> None:
        self.pool = pool
        self._slots = asyncio.Semaphore(max(1, int(pool.max_size * share)))
        self._local: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        # Coroutines of this process queue here, not on the database: one connection per portal at most.
        async with (
            self._local.setdefault(key, asyncio.Lock()),
            self._slots,
            self.pool.connection() as conn,
            conn.transaction(),
        ):
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [_NAMESPACE + key])
            yield
