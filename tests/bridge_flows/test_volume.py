"""Volume and chaos: deals moved into the bridge robot's stage by the hundred, half of them within one second; the
target failing one request in five; workers killed mid-run. Every deal arrives exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.bridge_flows import volume
from tests.bridge_flows.conftest import BridgeService, robot_rule

# One request in ten answers 5xx (half 500, half the gateway's 503), one in ten loses its connection (before or
# after the portal ran it): uncertain writes the bridge must resolve without creating anything twice.
TARGET_FAULTS = {"error_500_rate": 0.05, "error_503_rate": 0.05, "drop_rate": 0.1, "drop_phase": "random", "seed": 11}


def _prepare(bridge: BridgeService, deals: int) -> volume.World:
    bridge.install()
    bridge.wait(lambda: bridge.rows("SELECT 1 FROM robot_registrations WHERE code = 'b24bridge_bridge_deal'"), "sync")
    # The partner's plan: enterprise limits for its installed portal (its registry row holds them).
    bridge.rows("UPDATE portals SET burst = 250, drain = 5 RETURNING 1")
    world = volume.build(bridge.source, bridge.target, deals)
    robot_rule(bridge, "partner-to-acme")
    return world


def _wait_answered(bridge: BridgeService, deals: int, timeout: float) -> list[dict[str, Any]]:
    def answered() -> list[dict[str, Any]]:
        found = bridge.source.control("GET", "/_sandbox/workflows?status=completed")
        return list(found["workflows"]) if found["total"] == deals else []

    try:
        workflows: list[dict[str, Any]] = bridge.wait(answered, f"{deals} workflows answered", timeout=timeout)
    except AssertionError:
        states = bridge.rows("SELECT status, attempts, count(*) AS n FROM runs GROUP BY 1, 2 ORDER BY 1, 2")
        flows = {s: bridge.source.control("GET", f"/_sandbox/workflows?status={s}")["total"]
                 for s in ("running", "completed", "timeout", "failed")}  # fmt: skip
        jobs = bridge.rows("SELECT status, count(*) AS n FROM procrastinate_jobs GROUP BY 1")
        raise AssertionError(f"not all answered: runs {states}, workflows {flows}, jobs {jobs}") from None
    return workflows


def _check(bridge: BridgeService, world: volume.World, workflows: list[dict[str, Any]]) -> None:
    def runs_of(deal_id: int) -> Any:
        found = bridge.rows("SELECT id, status, attempts, error, outcome FROM runs WHERE document_id->>2 = %s",
                            f"DEAL_{deal_id}")  # fmt: skip
        calls = [bridge.rows("SELECT method, status, error FROM run_calls WHERE run_id = %s ORDER BY id", r["id"])
                 for r in found]  # fmt: skip
        return found, calls

    volume.check_target(world, bridge.source, bridge.target, workflows, runs_of)
    assert bridge.source.control("GET", "/_sandbox/workflows?status=running")["total"] == 0
    assert {r["status"] for r in bridge.rows("SELECT status FROM runs WHERE kind = 'bridge'")} == {"succeeded"}


@pytest.mark.timeout(300)
def test_two_hundred_deals_arrive_once_with_their_contacts_companies_rows_and_users(
    bridge_factory: Callable[..., BridgeService],
) -> None:
    bridge = bridge_factory(volume.ROUTES)
    world = _prepare(bridge, 200)
    volume.fire(bridge.source, world.deal_ids)
    _check(bridge, world, _wait_answered(bridge, 200, 120))


def _chaos(processes_factory: Callable[..., Any], deals: int, kills: int) -> None:
    bridge = processes_factory(volume.ROUTES, worker_in_process="false")
    world = _prepare(bridge, deals)
    workers = [bridge.start_worker(), bridge.start_worker()]
    bridge.target.control("POST", "/_sandbox/faults", TARGET_FAULTS)
    started = time.monotonic()
    volume.fire(bridge.source, world.deal_ids)
    for round_ in range(kills):
        # Wait until this worker has runs in hand, then kill it and put a fresh one in its place.
        bridge.wait(lambda: bridge.rows("SELECT 1 FROM runs WHERE status = 'running' LIMIT 1"), "runs in hand")
        time.sleep(0.5 + round_)
        bridge.kill(workers[round_ % 2])
        workers[round_ % 2] = bridge.start_worker()
    workflows = _wait_answered(bridge, deals, 420)
    print(f"{deals} deals with faults and {kills} killed workers: answered in {time.monotonic() - started:.1f} s")
    injected = bridge.target.control("GET", "/_sandbox/faults")["injected"]
    # The faults really happened. Their sequence is seeded, their count follows the target's requests, and those
    # depend on how full the batches go (a faster worker sends fewer): seed 11 injects its 3rd fault on the 20th.
    assert sum(injected.values()) >= 3, injected
    bridge.target.control("DELETE", "/_sandbox/faults")
    _check(bridge, world, workflows)
    retried = bridge.rows("SELECT count(*) AS n FROM runs WHERE kind = 'bridge' AND attempts > 1")[0]["n"]
    assert retried > 0  # some deliveries had to be resolved after an uncertain write or a killed worker


@pytest.mark.timeout(600)
def test_with_target_faults_and_workers_killed_twice_every_deal_arrives_once(
    processes_factory: Callable[..., Any],
) -> None:
    _chaos(processes_factory, 200, kills=2)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_thousand_deals_arrive_once(processes_factory: Callable[..., Any]) -> None:
    # b24bridge as `serve` runs it (API and in-process worker), in a process of its own. Run inside this process
    # beside both sandbox portals, one interpreter lock served all three: robot calls waited past the portal's 10 s
    # handler timeout and half were lost (the same at earlier commits), while a b24bridge of its own accepts 1,000 calls
    # in a second (bench/bridge_e2e.py: accept p99 1.7 s).
    bridge = processes_factory(volume.ROUTES)
    world = _prepare(bridge, 1000)
    volume.fire(bridge.source, world.deal_ids)
    _check(bridge, world, _wait_answered(bridge, 1000, 600))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_thousand_deals_with_target_faults_and_workers_killed_twice(processes_factory: Callable[..., Any]) -> None:
    _chaos(processes_factory, 1000, kills=2)
