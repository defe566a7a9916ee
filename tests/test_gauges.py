"""The database gauges say when they could not be sampled, instead of showing stale values as current."""

from __future__ import annotations

import asyncio
import contextlib
import time

from psycopg_pool import AsyncConnectionPool

from b24bridge import gauges
from b24bridge.db import Database
from tests.livehttp import free_socket


async def test_database_up_and_sample_time_follow_the_database(database: Database) -> None:
    await gauges.sample(database.pool)
    assert gauges.DATABASE_UP._value.get() == 1
    sampled = gauges.SAMPLED_AT._value.get()
    assert time.time() - 5 < sampled <= time.time()

    sock = free_socket()  # bound, not listening: PostgreSQL "down"
    port = sock.getsockname()[1]
    sock.close()
    away = AsyncConnectionPool(
        f"postgresql://postgres@127.0.0.1:{port}/none", open=False, timeout=0.5, min_size=0, max_size=1
    )
    await away.open(wait=False)
    try:
        sampler = asyncio.create_task(gauges.sample_forever(away, every=0.1))
        deadline = time.monotonic() + 10
        while gauges.DATABASE_UP._value.get() != 0:
            assert time.monotonic() < deadline, "database_up stayed 1 with the database away"
            await asyncio.sleep(0.1)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    finally:
        await away.close()
    assert gauges.SAMPLED_AT._value.get() == sampled  # the last good sample's time, not now
    await gauges.sample(database.pool)
    assert gauges.DATABASE_UP._value.get() == 1
