"""Deduplication of deliveries by content: the same mapped deal, from the same trigger stage, delivered twice within
a window is delivered once.

The key is the SHA-256 of a canonical JSON of the source portal, the route, the deal, its stage and a fingerprint of
the mapped values (deal, contact, company, rows). The first run to claim it delivers; another claiming it within the
window (two triggers for one change: the robot and an event, say) reports itself a duplicate of that run. Redis
``SET NX`` answers without the database when configured; a row in ``bridge_dedupe`` is the truth, so a Redis that
fails only costs the fast path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from b24bridge.bitrix.redis_state import RedisFallback, nothing
from b24bridge.coalesce import Coalescer

from . import repository


def content_key(source_key: str, route: str, deal_id: int, stage: str, mapped: Any) -> str:
    canonical = json.dumps(
        {"source": source_key, "route": route, "deal": deal_id, "stage": stage, "mapped": mapped},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Dedupe:
    def __init__(self, pool: AsyncConnectionPool, redis: Redis | None, window: float) -> None:
        self.pool = pool
        self.redis = redis
        self.window = dt.timedelta(seconds=window)
        self._fast = RedisFallback("dedupe")
        # The deliveries one batch's answer wakes claim their keys at once: one statement for them all.
        self._claims = Coalescer(self._claim_together, distinct=lambda claim: claim[0])

    async def claim(self, key: str, run_id: int) -> int | None:
        """Take ``key`` for ``run_id``; the id of the run that holds it already (within the window), else None."""
        if self.redis is not None:
            held = await self._fast.run(lambda: self._claim_fast(key, run_id), nothing)
            if held is not None:
                return held
        held_by = await self._claims((key, run_id))
        return held_by if held_by != run_id else None

    async def _claim_together(self, claims: list[tuple[str, int]]) -> list[int | None]:
        async with self.pool.connection() as conn:
            return await repository.claim_dedupe(conn, claims, self.window)

    async def _claim_fast(self, key: str, run_id: int) -> int | None:
        assert self.redis is not None
        redis_key = f"b24bridge:dedupe:{key}"
        ttl = int(self.window.total_seconds() * 1000)
        if not await self.redis.set(redis_key, str(run_id), nx=True, px=ttl):
            held = await self.redis.get(redis_key)
            if held is not None and int(held) != run_id:
                return int(held)
        return None

    async def release(self, key: str, run_id: int) -> None:
        """A run that failed for good lets go of its key, so the same content can be delivered by another."""
        if self.redis is not None:
            redis = self.redis
            redis_key = f"b24bridge:dedupe:{key}"

            async def release_fast() -> None:
                if (await redis.get(redis_key)) == str(run_id).encode():
                    await redis.delete(redis_key)

            # Not released there (Redis down): the key expires with the window.
            await self._fast.run(release_fast, nothing)
        async with self.pool.connection() as conn:
            await repository.release_dedupe(conn, key, run_id)
