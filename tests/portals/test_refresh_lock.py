"""Token refreshes across processes that share only the database: one refresh per portal at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from b24bridge.db import Database
from b24bridge.portals.refresh_lock import DatabaseRefreshLock
from b24bridge.settings import Settings
from tests.bitrix.test_oauth import assert_one_refresh_between
from tests.sandbox.conftest import LiveSandbox, _shared_sandbox, sandbox, sandbox_factory  # noqa: F401


@pytest.fixture
async def two_pools(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    """Two pools on one database, as two processes have."""
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    async with Database(settings) as first, Database(settings) as second:
        yield first, second


async def test_holders_of_one_key_take_turns_and_other_keys_do_not_wait(two_pools: tuple[Database, Database]) -> None:
    first, second = (DatabaseRefreshLock(db.pool) for db in two_pools)
    order: list[str] = []
    inside = asyncio.Event()

    async def hold(lock: DatabaseRefreshLock, key: str, name: str, seconds: float) -> None:
        async with lock.hold(key):
            order.append(f"{name} in")
            inside.set()
            await asyncio.sleep(seconds)
            order.append(f"{name} out")

    holder = asyncio.create_task(hold(first, "portal-1", "a", 0.5))
    await inside.wait()
    # Another portal's refresh goes ahead while portal-1's is held elsewhere.
    await asyncio.wait_for(hold(second, "portal-2", "c", 0), timeout=2)
    await asyncio.gather(holder, hold(second, "portal-1", "b", 0))
    assert order == ["a in", "c in", "c out", "a out", "b in", "b out"]


async def test_refresh_is_single_flight_across_processes_through_the_database(
    sandbox: LiveSandbox,  # noqa: F811
    two_pools: tuple[Database, Database],
) -> None:
    """Two clients that share only the database and the token store refresh once, without Redis."""
    first, second = two_pools
    await assert_one_refresh_between(
        sandbox, DatabaseRefreshLock(first.pool), DatabaseRefreshLock(second.pool), calls=30
    )
