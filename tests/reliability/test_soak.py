"""Soak (issue 16): a steady 20 events a second for 30 minutes (``B24BRIDGE_SOAK_SECONDS``), robot calls, bridge robots
and hooks alike, with the target failing one request in twenty. Every process's memory is flat (within 10 % from
the end of the warm-up to the end), the oldest waiting job never gets old, and nothing is lost.

    .venv/bin/pytest -m slow tests/reliability/test_soak.py -s
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.reliability.conftest import BRIDGE_STAGE, HOOK_STAGE, ROBOT_STAGE, World
from tests.reliability.fleet import wait

RATE = 20
FAULTS = {"error_500_rate": 0.025, "drop_rate": 0.025, "drop_phase": "random", "seed": 16}
WARM_UP = 120.0
QUEUE_AGE = "SELECT coalesce(extract(epoch FROM now() - min(e.at)), 0) FROM procrastinate_jobs j JOIN " \
            "procrastinate_events e ON e.job_id = j.id AND e.type = 'deferred' WHERE j.status = 'todo' " \
            "AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())"  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_half_an_hour_at_twenty_events_a_second(world_factory: Callable[..., World]) -> None:
    seconds = float(os.environ.get("B24BRIDGE_SOAK_SECONDS", "1800"))
    world = world_factory(apis=1, workers=1)
    each = int(RATE * seconds / 3)
    robot, bridge, hooked = world.deals(each), world.deals(each), world.deals(each)
    world.target.control("POST", "/_sandbox/faults", FAULTS)
    for deals, stage in ((robot, ROBOT_STAGE), (bridge, BRIDGE_STAGE), (hooked, HOOK_STAGE)):
        world.move(deals, stage, over_seconds=seconds)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(10):
            age = float(world.rows(QUEUE_AGE)[0]["coalesce"])
            samples.append({"at": time.monotonic(), "rss": world.fleet.rss_mb(), "queue_age": age})

    began = time.monotonic()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    time.sleep(seconds)
    stop.set()
    sampler.join()

    def settled() -> bool:
        hooks = world.handler_calls("webhook")
        answered = all("duration" in c for c in hooks + world.handler_calls("robot"))
        return answered and all(w["status"] != "running" for w in world.workflows()) and len(hooks) == each

    wait(settled, "every workflow ended, every hook sent", timeout=600, every=5)
    world.target.control("DELETE", "/_sandbox/faults")
    workflows = world.workflows()
    assert len(workflows) == 2 * each and {w["status"] for w in workflows} == {"completed"}
    calls = world.handler_calls("robot") + world.handler_calls("webhook")
    assert [c["status"] for c in calls if c.get("status") != 200] == []

    def delivered() -> list[dict[str, Any]]:
        found = world.target_deals()
        return found if len(found) >= 2 * each else []

    origins = [d["ORIGIN_ID"] for d in wait(delivered, "every deal delivered", timeout=600, every=5)]
    assert len(origins) == len(set(origins)) == 2 * each

    warm = [s for s in samples if s["at"] - began >= WARM_UP]
    first, last = warm[0]["rss"], warm[-1]["rss"]
    ages = [s["queue_age"] for s in samples]
    print(f"{seconds:.0f} s at {RATE}/s: RSS MB at the end of the warm-up {first}, at the end {last}; "
          f"oldest waiting job: median {statistics.median(ages):.1f} s, max {max(ages):.1f} s")  # fmt: skip
    for name in first:
        assert last[name] <= first[name] * 1.10, (name, first[name], last[name])
    assert max(ages) < 60, max(ages)
