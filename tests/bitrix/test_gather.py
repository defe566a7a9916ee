"""How long a partial batch waits for company: not at all while the portal's bucket is steady, up to a drain
interval while it fills (other processes sharing the budget, a spike)."""

from __future__ import annotations

import asyncio

from b24bridge.bitrix import BitrixClient, Limits, MemoryLimiter, WebhookAuth
from tests.bitrix.test_calls import requests_sent
from tests.sandbox.conftest import LiveSandbox

LIMITS = Limits()


async def _three_calls(sandbox: LiveSandbox, key: str, fill: int) -> float:
    """Three lone calls 0.3 s and 0.1 s apart, ``fill`` requests spent by "another process" between the first two;
    how many requests they took."""
    limiter = MemoryLimiter()
    for _ in range(20):  # a bucket already part full: only its trend should matter
        await limiter.reserve_request(key, LIMITS)
    async with BitrixClient(limiter=limiter) as client:
        portal = client.portal(WebhookAuth(sandbox.webhook_url), key=key, limits=LIMITS)
        before = requests_sent(portal)
        await portal.call("user.current")
        for _ in range(fill):
            await limiter.reserve_request(key, LIMITS)
            await asyncio.sleep(0.3 / max(fill, 1))
        if not fill:
            await asyncio.sleep(0.3)
        second = asyncio.ensure_future(portal.call("user.current"))
        await asyncio.sleep(0.1)
        await asyncio.gather(second, portal.call("user.current"))
        return requests_sent(portal) - before


async def test_lone_calls_go_alone_while_the_bucket_is_steady(sandbox: LiveSandbox) -> None:
    assert await _three_calls(sandbox, "steady", fill=0) == 3


async def test_calls_wait_for_company_while_the_bucket_fills(sandbox: LiveSandbox) -> None:
    # 15 requests in 0.3 s beside ours: far beyond the drain, so the second call waits and the third joins it.
    assert await _three_calls(sandbox, "filling", fill=15) == 2
