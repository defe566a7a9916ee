"""The client stays inside a portal's limits instead of bouncing off them (the sandbox counts every refusal)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from b24bridge.bitrix import BitrixClient, Limits, RetryPolicy, WebhookAuth, errors
from tests.sandbox.conftest import LiveSandbox


def refusals(sandbox: LiveSandbox) -> tuple[int, int]:
    view = sandbox.control("GET", "/_sandbox/limits")
    return view["refused_requests"], view["refused_operating"]


async def test_5000_calls_under_cloud_limits_get_no_limit_errors(sandbox_factory: Callable[..., LiveSandbox]) -> None:
    sandbox = sandbox_factory()  # cloud plan: burst 50, drain 2/s, 480 s per 10 min
    async with BitrixClient() as client:
        portal = client.portal(WebhookAuth(sandbox.webhook_url))
        ids = await asyncio.gather(
            *(portal.call("crm.contact.add", {"fields": {"NAME": f"N{i}", "ORIGIN_ID": str(i)}}) for i in range(5000))
        )
    assert len(set(ids)) == 5000
    assert refusals(sandbox) == (0, 0)


async def test_operating_time_budget_is_respected(sandbox_factory: Callable[..., LiveSandbox]) -> None:
    # A costly method with a small budget and a short window: the budget, not the bucket, is what binds.
    sandbox = sandbox_factory(
        limits_enabled=True,
        method_costs={"crm.contact.add": 0.5},
        operating_limit=30.0,
        operating_window=5.0,
        burst=10_000,
        drain_per_second=10_000.0,
    )
    async with BitrixClient() as client:
        # The client is told the portal's plan, as the portal registry does for each portal.
        limits = Limits(burst=10_000, drain=10_000.0, operating_limit=30.0)
        portal = client.portal(WebhookAuth(sandbox.webhook_url), limits=limits)
        ids = await asyncio.gather(*(portal.call("crm.contact.add", {"fields": {"NAME": f"N{i}"}}) for i in range(150)))
    assert len(set(ids)) == 150
    assert refusals(sandbox) == (0, 0)


async def test_faults_idempotent_calls_succeed_and_writes_are_never_duplicated(sandbox: LiveSandbox) -> None:
    seeded = [sandbox.call("crm.contact.add", {"fields": {"NAME": f"S{i}"}}).json()["result"] for i in range(40)]
    sandbox.control(
        "POST",
        "/_sandbox/faults",
        {"error_500_rate": 0.05, "error_503_rate": 0.05, "drop_rate": 0.05, "drop_phase": "random", "seed": 7},
    )
    retry = RetryPolicy(max_attempts=12, base_delay=0.01, max_delay=0.05)
    outcomes: dict[str, int] = {"ok": 0, "uncertain": 0}
    created: list[int] = []
    async with BitrixClient(retry=retry, seed=3) as client:
        portal = client.portal(WebhookAuth(sandbox.webhook_url), key="faulty")

        async def write(i: int) -> None:
            try:
                created.append(await portal.call("crm.contact.add", {"fields": {"NAME": "W", "ORIGIN_ID": f"w{i}"}}))
                outcomes["ok"] += 1
            except errors.BitrixError as exc:
                assert exc.uncertain, f"a write failed for a reason other than uncertainty: {exc!r}"
                outcomes["uncertain"] += 1

        reads = [portal.call("crm.contact.get", {"id": seeded[i % 40]}) for i in range(400)]
        read_results, _ = await asyncio.gather(asyncio.gather(*reads), asyncio.gather(*(write(i) for i in range(400))))
        # Direct requests too (no batching), where a lost answer affects one call only.
        direct = await asyncio.gather(*(portal.request("crm.contact.get", {"id": s}) for s in seeded))
    described = sandbox.control("GET", "/_sandbox/faults")
    sandbox.control("DELETE", "/_sandbox/faults")

    assert all(r["ID"] == str(seeded[i % 40]) for i, r in enumerate(read_results))  # every read succeeded
    assert all(answer.result["NAME"].startswith("S") for answer in direct)
    assert sum(described["injected"].values()) > 10  # faults really happened
    assert outcomes["ok"] + outcomes["uncertain"] == 400
    stored: dict[int, str] = {}
    start = 0
    while True:
        page = sandbox.call(
            "crm.contact.list", {"filter": {"NAME": "W"}, "select": ["ID", "ORIGIN_ID"], "start": start}
        ).json()
        stored.update({int(r["ID"]): r["ORIGIN_ID"] for r in page["result"]})
        if "next" not in page:
            break
        start = page["next"]
    assert len(stored) == page["total"]
    assert len(set(stored.values())) == len(stored)  # no write executed twice
    assert outcomes["ok"] <= len(stored) <= outcomes["ok"] + outcomes["uncertain"]
    assert set(created) <= set(stored)  # every reported id is real


def _run_processes(sandbox: LiveSandbox, count: int, redis_url: str | None) -> list[dict[str, object]]:
    args = [sys.executable, "-m", "tests.bitrix.load_process", sandbox.webhook_url, str(count)]
    if redis_url:
        args.append(redis_url)
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


@pytest.mark.redis
def test_two_processes_share_one_budget_through_redis(
    sandbox_factory: Callable[..., LiveSandbox], redis_url: str
) -> None:
    from redis import Redis

    redis = Redis.from_url(redis_url)
    stale = list(redis.scan_iter("t-shared:*"))  # limiter state of an earlier run on this Redis
    if stale:
        redis.delete(*stale)
    sandbox = sandbox_factory()
    results = _run_processes(sandbox, 1500, redis_url)
    assert [r["ok"] for r in results] == [1500, 1500]
    assert refusals(sandbox) == (0, 0)


def test_without_shared_state_two_processes_overrun_the_bucket(sandbox_factory: Callable[..., LiveSandbox]) -> None:
    """The control case: each process alone believes it has the whole burst, so together they get refused."""
    sandbox = sandbox_factory()
    _run_processes(sandbox, 1500, None)
    assert refusals(sandbox)[0] > 0


pytestmark = pytest.mark.timeout(300)
