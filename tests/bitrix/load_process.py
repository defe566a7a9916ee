"""A separate process that sends independent calls to one portal (used by the shared-limiter test).

    python -m tests.bitrix.load_process WEBHOOK_URL COUNT [REDIS_URL]
Prints one JSON line: {"ok": n, "errors": {code: n}}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

from b24bridge.bitrix import BitrixClient, WebhookAuth, errors
from b24bridge.observability import configure_logging


async def main(url: str, count: int, redis_url: str | None) -> None:
    # Quiet: the parent reads only the last line, and a full pipe would stall this process.
    configure_logging("WARNING", "json")
    limiter = None
    if redis_url:
        from redis.asyncio import Redis

        from b24bridge.bitrix.redis_state import RedisLimiter

        redis = Redis.from_url(redis_url)
        limiter = RedisLimiter(redis, prefix="t-shared")
    failures: Counter[str] = Counter()
    async with BitrixClient(limiter=limiter) as client:
        portal = client.portal(WebhookAuth(url), key="shared-portal")

        async def one(i: int) -> bool:
            try:
                await portal.call("crm.contact.add", {"fields": {"NAME": f"P{i}"}})
                return True
            except errors.BitrixError as exc:
                failures[exc.code or type(exc).__name__] += 1
                return False

        results = await asyncio.gather(*(one(i) for i in range(count)))
    if redis_url:
        await redis.aclose()
    print(json.dumps({"ok": sum(results), "errors": dict(failures)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
