"""What every part of the running service shares: settings, database, Bitrix24 client, job queue, Redis.

``serve`` and ``worker`` both open one context; HTTP handlers and jobs reach it through ``current()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import procrastinate

from b24bridge import migrations
from b24bridge.bitrix import BatchSettings, BitrixClient
from b24bridge.db import Database
from b24bridge.observability import get_logger
from b24bridge.settings import Settings

log = get_logger(__name__)


def _blueprints() -> dict[str, procrastinate.Blueprint]:
    """Job definitions by namespace; imported late so that domain packages may import this module."""
    from b24bridge.robots.tasks import build_blueprint as robots

    return {"robots": robots()}


def _worker_defaults() -> dict[str, Any]:
    """Heartbeat settings that let a dead worker's jobs be found and re-run (see ``robots.tasks``)."""
    from b24bridge.robots.tasks import WORKER_DEFAULTS

    return dict(WORKER_DEFAULTS)


@dataclass
class Context:
    settings: Settings
    database: Database
    bitrix: BitrixClient
    jobs: procrastinate.App
    redis: Any | None = None


_current: Context | None = None


def current() -> Context:
    if _current is None:
        raise RuntimeError("no b24bridge context is open")
    return _current


@asynccontextmanager
async def open_context(settings: Settings, database: Database | None = None) -> AsyncIterator[Context]:
    """Start what the service needs (the database unless one is given, migrations, clients) and stop it after."""
    global _current
    async with AsyncExitStack() as stack:
        if database is None:
            database = Database(settings)
            await database.start()
            stack.push_async_callback(database.stop)
        await asyncio.to_thread(migrations.upgrade, database.url)
        redis = None
        limiter = refresh_lock = None
        if settings.redis_url:
            from redis.asyncio import Redis

            from b24bridge.bitrix.redis_state import RedisLimiter, RedisRefreshLock

            redis = Redis.from_url(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            limiter, refresh_lock = RedisLimiter(redis), RedisRefreshLock(redis)
        batching = BatchSettings(enabled=settings.bitrix_autobatch)
        bitrix = BitrixClient(limiter=limiter, refresh_lock=refresh_lock, batching=batching)
        stack.push_async_callback(bitrix.aclose)
        jobs = database.procrastinate_app(worker_defaults=_worker_defaults())
        for namespace, blueprint in _blueprints().items():
            jobs.add_tasks_from(blueprint, namespace=namespace)
        await stack.enter_async_context(jobs.open_async())
        context = Context(settings, database, bitrix, jobs, redis)
        previous, _current = _current, context
        try:
            yield context
        finally:
            _current = previous
