"""Scale-out (issue 16): two API processes and three workers on one PostgreSQL and one Redis, against one portal at
cloud limits. Together they reach 90 % of what the portal's limits allow, the portal refuses nothing (503 or 429),
and no run is executed twice (the run log shows one attempt and one of each call per run). Then Redis is stopped
mid-run: each worker keeps to its share of the limits (the portal refuses at most a tenth of the requests) and
nothing is lost."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import ROBOT_STAGE, World
from tests.reliability.fleet import RedisServer, wait

BURST, DRAIN, MAX_BATCH, COMMANDS_PER_RUN = 50, 2.0, 50, 2  # the cloud plan (REFERENCE 2.1)


def bound_seconds(runs: int) -> float:
    """The least time ``runs`` robot runs take at the portal's limits, all calls there at once."""
    return max(0.0, (runs * COMMANDS_PER_RUN / MAX_BATCH - BURST) / DRAIN)


def floor_seconds(arrivals: list[float]) -> float:
    """The least time the runs take at the portal's limits given when their calls arrived (seconds after the start,
    sorted): request j carries 25 runs, goes once its last run has arrived, and not before the bucket lets it."""
    per_request = MAX_BATCH // COMMANDS_PER_RUN
    sent = 0.0
    for j in range(-(-len(arrivals) // per_request)):
        ready = arrivals[min(len(arrivals) - 1, (j + 1) * per_request - 1)]
        sent = max(sent, ready, (j - BURST + 1) / DRAIN)
    return sent


def _fire(world: World, count: int) -> tuple[list[int], float]:
    world.source.control("POST", "/_sandbox/config", {"limits_enabled": False})  # the test's own set-up goes freely
    ids = world.deals(count)
    world.source.control("POST", "/_sandbox/config", {"limits_enabled": True})  # counts from here, bucket empty
    started = time.time()
    world.move(ids, ROBOT_STAGE, over_seconds=0)
    return ids, started


def _answered(world: World, ids: list[int], timeout: float) -> list[dict[str, Any]]:
    documents = {f"DEAL_{i}" for i in ids}

    def done() -> list[dict[str, Any]]:
        flows = [w for w in world.workflows() if w["document_id"][2] in documents]
        return flows if len(flows) == len(ids) and all(w["status"] != "running" for w in flows) else []

    flows: list[dict[str, Any]] = wait(done, f"{len(ids)} workflows answered", timeout=timeout, every=1)
    return flows


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_apis_and_three_workers_share_one_portals_limits(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis")
    try:
        world = world_factory(
            apis=2, workers=3, redis_url=redis.url, worker_portal_slots=os.environ.get("SLOTS", "100")
        )
        runs = int(os.environ.get("RUNS", "5000"))
        ids, started = _fire(world, runs)
        flows = _answered(world, ids, timeout=600)
        assert {w["status"] for w in flows} == {"completed"}
        took = max(w["finished_at"] for w in flows) - started
        limits = world.source.control("GET", "/_sandbox/limits")
        # The sandbox (in this process) sends the calls over several seconds; the floor counts from their arrival.
        calls = world.handler_calls("robot")[-runs:]
        floor = floor_seconds(sorted(c["at"] + c["duration"] - started for c in calls))
        share = floor / took
        requests = limits["admitted_requests"]
        print(
            f"{runs} robot runs by 3 workers in {took:.1f} s; the limits' floor for these arrivals {floor:.1f} s "
            f"(all at once: {bound_seconds(runs):.1f} s): {share:.3f} of the bound "
            f"({requests} requests, {runs * COMMANDS_PER_RUN / max(1, requests):.1f} commands each)"
        )
        assert (limits["refused_requests"], limits["refused_operating"]) == (0, 0)
        assert share >= 0.9
        twice = world.rows(
            "SELECT r.id, r.attempts, c.method, count(*) AS n FROM runs r JOIN run_calls c ON c.run_id = r.id"
            " GROUP BY 1, 2, 3 HAVING count(*) > 1 OR r.attempts > 1"
        )
        assert twice == [], twice[:5]

        # Redis goes away a few seconds into the next run. Fewer runs: the portal allows each method 480 s of its
        # own time per 10 minutes (REFERENCE 2.2), and the first run used half of crm.contact.add's.
        second = runs * 2 // 5
        ids, started = _fire(world, second)
        time.sleep(3)
        redis.stop()
        flows = _answered(world, ids, timeout=900)
        limits = world.source.control("GET", "/_sandbox/limits")
        took = max(w["finished_at"] for w in flows) - started
        requests = limits["admitted_requests"] + limits["refused_requests"]
        assert {w["status"] for w in flows} == {"completed"}  # nothing lost
        contacts = world.source.control("GET", "/_sandbox/crm/counts")["counts"]["CONTACT"]
        assert contacts == runs + second  # and nothing twice
        print(
            f"without Redis: {second} runs in {took:.1f} s (all at once: {bound_seconds(second):.1f} s), "
            f"{limits['refused_requests']} refused of {requests} requests"
        )
        assert limits["refused_requests"] <= 0.1 * max(requests, 1)
    finally:
        redis.stop()
