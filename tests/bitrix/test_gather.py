"""How long a partial batch waits for company: not at all while the portal's bucket is steady, up to a drain
interval while it fills (other processes sharing the budget, a spike)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

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


async def _groups(sandbox: LiveSandbox, key: str, backlog: Callable[[str], int], sizes: list[int], gap: float) -> float:
    """Groups of calls of ``sizes``, ``gap`` seconds apart, to a portal whose backlog says ``backlog``; how many
    requests they took."""
    async with BitrixClient(backlog=backlog) as client:
        portal = client.portal(WebhookAuth(sandbox.webhook_url), key=key, limits=LIMITS)
        before = requests_sent(portal)
        calls = []
        for size in sizes:
            calls += [asyncio.ensure_future(portal.call("user.current")) for _ in range(size)]
            await asyncio.sleep(gap)
        await asyncio.gather(*calls)
        return requests_sent(portal) - before


async def _waves(sandbox: LiveSandbox, key: str, backlog: int) -> tuple[float, list[str]]:
    """Ten waves of five calls 30 ms apart (each wave longer after the last than a lone call's window) to a portal
    with ``backlog`` calls said to be on their way; how many requests they took, and the keys the backlog was asked
    for."""
    asked: list[str] = []

    def queued(portal_key: str) -> int:
        asked.append(portal_key)
        return backlog

    return await _groups(sandbox, key, queued, [5] * 10, 0.03), asked


async def test_a_portal_with_a_queue_sends_its_calls_in_full_requests(sandbox: LiveSandbox) -> None:
    # 100 jobs queued for the portal: the 50 calls wait for each other (up to a second), one request carries them.
    sent, asked = await _waves(sandbox, "queued", backlog=100)
    assert sent == 1
    assert set(asked) == {"queued"}


@pytest.mark.parametrize("backlog", [0, 4])
async def test_a_portal_without_a_queue_sends_each_wave_as_it_comes(sandbox: LiveSandbox, backlog: int) -> None:
    # Nothing queued, or fewer jobs than a busy portal has (a few calls a second keep one or two running).
    sent, _ = await _waves(sandbox, f"unqueued-{backlog}", backlog=backlog)
    # The first wave goes at once (later ones may be held by the bucket's trend: ten requests in 0.3 s is filling it).
    assert sent >= 2


async def test_calls_that_are_all_of_a_portals_queue_do_not_wait_for_more(sandbox: LiveSandbox) -> None:
    # The backlog counts running jobs too; when their calls are all here (a flood's last ones) nothing more is coming.
    async with BitrixClient(backlog=lambda key: 30) as client:
        portal = client.portal(WebhookAuth(sandbox.webhook_url), key="last-of-a-flood", limits=LIMITS)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.gather(*(portal.call("user.current") for _ in range(30)))
        took = loop.time() - began
    assert took < 0.5  # held for the rest of a queue, they would wait the whole second


async def _two_groups(sandbox: LiveSandbox, key: str, backlog: Callable[[str], int], first: int, later: int) -> float:
    """``first`` calls, then ``later`` more 0.1 s on (longer than any wave waits for its stragglers)."""
    return await _groups(sandbox, key, backlog, [first, later], 0.1)


@pytest.mark.parametrize(
    ("case", "jobs", "first"),
    [
        ("a flood's first count, its first jobs", 8, 4),  # the door still taking its calls
        ("a flood's last jobs, some a step behind", 33, 29),  # their calls would go half a second apart
    ],
)
async def test_a_busy_portals_request_waits_for_the_calls_of_every_job_it_counts(
    sandbox: LiveSandbox, case: str, jobs: int, first: int
) -> None:
    sent = await _two_groups(sandbox, f"busy-{jobs}", lambda key: jobs, first, jobs - first)
    assert sent == 1, case


async def test_a_count_that_lands_while_calls_wait_holds_them_for_the_rest(sandbox: LiveSandbox) -> None:
    # The first calls are gathered before the lane's first count is known (0); the count lands during their window.
    asked: list[str] = []

    def landing(portal_key: str) -> int:
        asked.append(portal_key)
        return 0 if len(asked) == 1 else 50

    sent = await _two_groups(sandbox, "landing", landing, 5, 45)
    assert sent == 1
