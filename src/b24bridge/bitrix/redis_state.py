"""Limiter state and refresh locks in Redis, shared by every process and machine talking to one portal.

The bucket is updated by one Lua script using Redis' own clock, so processes with skewed clocks still agree.

Redis is optional and may fail: while it does not answer, each process falls back to its own state (its own
limiter, the refresh lock it was given as fallback) and tries Redis again a few seconds later. Calls to portals go
on; only the sharing is lost, and that is logged and counted (``b24bridge_redis_unavailable_total``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import metrics
from .auth import LocalRefreshLock, RefreshLock
from .limiter import Limits, MemoryLimiter

T = TypeVar("T")
# What a failing Redis raises: its own errors, and socket errors that slip through unwrapped.
REDIS_FAILURES = (RedisError, OSError)
log = structlog.get_logger("b24bridge.bitrix")


class RedisFallback:
    """Runs a Redis operation, or its fallback while Redis fails. After a failure Redis is left alone for
    ``pause`` seconds, so a down Redis costs one timeout per pause, not one per call."""

    def __init__(self, use: str, pause: float = 5.0) -> None:
        self.use = use
        self.pause = pause
        self._down_until = 0.0
        self._down = False

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def run(self, operation: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        if not self.available:
            return await fallback()
        try:
            result = await operation()
        except REDIS_FAILURES as exc:
            self.failed(exc)
            return await fallback()
        if self._down:
            self._down = False
            log.info("redis.back", use=self.use)
        return result

    def failed(self, exc: BaseException) -> None:
        metrics.REDIS_UNAVAILABLE.labels(self.use).inc()
        self._down_until = time.monotonic() + self.pause
        if not self._down:
            self._down = True
            # The error text may hold the URL; only its type is said.
            log.warning("redis.unavailable", use=self.use, error=type(exc).__name__, retry_in=self.pause)


async def nothing() -> None:
    """The fallback of a Redis operation that only shares: without Redis there is nothing to do or know."""
    return None


_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local capacity, drain, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or '0')
local updated = tonumber(redis.call('HGET', KEYS[1], 'updated') or tostring(now))
level = math.max(0, level - (now - updated) * drain)
local wait = math.max(0, (level + 1 - capacity) / drain)
redis.call('HSET', KEYS[1], 'level', tostring(level + 1), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], ttl)
return tostring(wait)
"""

_FILL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local burst = tonumber(ARGV[1])
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or '0')
redis.call('HSET', KEYS[1], 'level', tostring(math.max(level, burst)), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# Keep the newest report only: answers can arrive out of order from many processes.
_RECORD = """
local seen = tonumber(redis.call('HGET', KEYS[1], 'seen') or '0')
if tonumber(ARGV[3]) < seen then return 0 end
redis.call('HSET', KEYS[1], 'used', ARGV[1], 'reset_at', ARGV[2], 'seen', ARGV[3])
redis.call('PEXPIRE', KEYS[1], 660000)
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLimiter:
    """The limiter protocol over Redis; in-flight counts and cost estimates stay local to the process.

    While Redis fails, each process limits itself to its share of every portal's limits: ``sharers()`` says how many
    processes call portals (the live workers, which the composition root counts from their heartbeats). Each taking
    the whole burst on its own state would have sent a portal that many times its limit.
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str = "b24bridge",
        retry_after: float = 5.0,
        sharers: Callable[[], int] | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.sharers = sharers or (lambda: 1)
        self._local = MemoryLimiter()
        self._shared = RedisFallback("limiter", retry_after)
        self._reserve: Any = redis.register_script(_RESERVE)
        self._fill: Any = redis.register_script(_FILL)
        self._record: Any = redis.register_script(_RECORD)

    def _bucket(self, portal: str) -> str:
        return f"{self.prefix}:bucket:{portal}"

    def _method(self, portal: str, method: str) -> str:
        return f"{self.prefix}:operating:{portal}:{method}"

    async def reserve_request(self, portal: str, limits: Limits) -> float:
        ttl = int(1000 * (limits.burst / limits.drain + 60))

        async def shared() -> float:
            return float(await self._reserve(keys=[self._bucket(portal)], args=[limits.capacity, limits.drain, ttl]))

        return await self._shared.run(shared, lambda: self._local.reserve_request(portal, self._share(limits)))

    async def fullness(self, portal: str, limits: Limits) -> float:
        async def shared() -> float:
            level, updated = await self.redis.hmget(self._bucket(portal), ["level", "updated"])
            if level is None or updated is None:
                return 0.0
            # Redis keeps its own clock; the skew between it and ours only shifts this estimate slightly.
            current = float(level) - (time.time() - float(updated)) * limits.drain
            return min(1.0, max(0.0, current / limits.capacity))

        return await self._shared.run(shared, lambda: self._local.fullness(portal, self._share(limits)))

    async def request_refused(self, portal: str, limits: Limits) -> None:
        ttl = int(1000 * (limits.burst / limits.drain + 60))

        async def shared() -> None:
            await self._fill(keys=[self._bucket(portal)], args=[limits.burst, ttl])

        await self._shared.run(shared, lambda: self._local.request_refused(portal, self._share(limits)))

    def _share(self, limits: Limits) -> Limits:
        """This process's part of ``limits`` while Redis fails (all of them while it works)."""
        sharers = max(1, self.sharers()) if not self._shared.available else 1
        if sharers == 1:
            return limits
        return dataclasses.replace(
            limits,
            burst=max(limits.bucket_margin + 1, limits.burst // sharers),
            drain=limits.drain / sharers,
            operating_limit=limits.operating_limit / sharers,
        )

    async def method_delay(self, portal: str, method: str, limits: Limits) -> float:
        await self._sync(portal, method)
        return await self._local.method_delay(portal, method, self._share(limits))

    async def method_allowance(self, portal: str, method: str, limits: Limits) -> int | None:
        await self._sync(portal, method)
        return await self._local.method_allowance(portal, method, self._share(limits))

    async def _sync(self, portal: str, method: str) -> None:
        """Adopt the newest shared report of this method's budget."""
        fields = ["used", "reset_at", "blocked_until", "seen"]

        async def read() -> list[Any] | None:
            found: list[Any] = await self.redis.hmget(self._method(portal, method), fields)
            return found

        shared = await self._shared.run(read, nothing)
        if shared is None:
            return  # this process's own view stands
        local = self._local.state_of(portal, method)
        if shared[0] is not None and float(shared[3] or 0) >= local.seen:
            local.used = float(shared[0])
            local.reset_at = float(shared[1]) if shared[1] not in (None, b"", "") else None
            local.seen = float(shared[3] or 0)
        if shared[2] is not None:
            local.blocked_until = max(local.blocked_until, float(shared[2]))

    async def record_operating(
        self,
        portal: str,
        method: str,
        operating: float,
        reset_at: float | None,
        cost: float | None = None,
        at: float | None = None,
        cost_is_step: bool = True,
    ) -> None:
        await self._local.record_operating(portal, method, operating, reset_at, cost, at, cost_is_step)
        seen = at if at is not None else time.time()

        async def shared() -> None:
            args = [operating, "" if reset_at is None else reset_at, seen]
            await self._record(keys=[self._method(portal, method)], args=args)

        await self._shared.run(shared, nothing)

    async def method_blocked(self, portal: str, method: str) -> None:
        await self._local.method_blocked(portal, method)
        until = self._local.state_of(portal, method).blocked_until

        async def shared() -> None:
            await self.redis.hset(self._method(portal, method), "blocked_until", str(until))

        await self._shared.run(shared, nothing)

    def started(self, portal: str, method: str) -> None:
        self._local.started(portal, method)

    def finished(self, portal: str, method: str) -> None:
        self._local.finished(portal, method)


class RedisRefreshLock:
    """One token refresh per portal across processes: ``SET NX PX`` with an owner token, released by script.

    While Redis fails, ``fallback`` (a lock every process can reach, such as the database's, or this process's own)
    is held instead."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "b24bridge",
        ttl: float = 30.0,
        poll: float = 0.05,
        fallback: RefreshLock | None = None,
        retry_after: float = 5.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self.poll = poll
        self.fallback = fallback if fallback is not None else LocalRefreshLock()
        self._release: Any = redis.register_script(_RELEASE)
        self._local: dict[str, asyncio.Lock] = {}
        self._shared = RedisFallback("refresh_lock", retry_after)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        name = f"{self.prefix}:refresh:{key}"
        owner = uuid.uuid4().hex
        async with self._local.setdefault(key, asyncio.Lock()):
            acquired = self._shared.available and await self._acquire(name, owner, key)
            if not acquired:
                async with self.fallback.hold(key):
                    yield
                return
            try:
                yield
            finally:
                try:
                    await self._release(keys=[name], args=[owner])
                except REDIS_FAILURES as exc:
                    self._shared.failed(exc)  # the key expires by itself after ``ttl``

    async def _acquire(self, name: str, owner: str, key: str) -> bool:
        """True once held; False when Redis fails (the caller takes the fallback)."""
        deadline = time.monotonic() + self.ttl * 2
        while True:
            try:
                if await self.redis.set(name, owner, nx=True, px=int(self.ttl * 1000)):
                    return True
            except REDIS_FAILURES as exc:
                self._shared.failed(exc)
                return False
            if time.monotonic() > deadline:
                raise TimeoutError(f"refresh lock for {key} not acquired within {self.ttl * 2:.0f}s")
            await asyncio.sleep(self.poll)
