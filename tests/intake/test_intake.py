"""The intake against a real PostgreSQL, reached through a proxy the tests cut: calls stored together, a duplicate or
a coalesced call failing nobody else, calls spooled while the database is away and stored once, in order, after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from b24bridge.db import DATABASE_AWAY
from b24bridge.intake.committer import GroupCommit
from b24bridge.intake.schemas import RUN_ID, Submission
from b24bridge.intake.service import Intake
from b24bridge.intake.spool import Spool
from b24bridge.portals.schemas import Check
from b24bridge.runs.schemas import NewRun
from tests.intake.test_spool import _sealed, _unsealed
from tests.tcpproxy import TcpProxy


def robot_call(workflow: str, member: str = "portal-a") -> Submission:
    run = NewRun(member_id=member, document_id=["crm", "CCrmDocumentDeal", "DEAL_1"], inputs={"n": workflow},
                 robot_code="create", workflow_id=workflow, event_token=f"{workflow}|token")  # fmt: skip
    return Submission(run, "robots:run", member, lock=f"run:{RUN_ID}", queueing_lock=f"run:{RUN_ID}")


def trigger(deal: int, number: int, member: str = "portal-a") -> Submission:
    run = NewRun(member_id=member, document_id=["crm", "CCrmDocumentDeal", f"DEAL_{deal}"], kind="bridge",
                 route="r", trigger="hook", inputs={"deal_id": deal, "number": number})  # fmt: skip
    return Submission(run, "bridge:run", member, lock=f"deal:{member}:{deal}", queueing_lock=f"bridge:r:{deal}")


async def drained(intake: Intake, within: float = 20.0) -> None:
    """Drain as the drainer does, a round a second: the pool may take a moment to reconnect after an outage."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await intake.drain()
            return
        except DATABASE_AWAY:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


@dataclass
class World:
    url: str
    proxy: TcpProxy
    intake: Intake
    spool_dir: Path

    def runs(self) -> list[tuple[int, str, str | None, dict[str, object]]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute("SELECT id, member_id, workflow_id, inputs FROM runs ORDER BY id").fetchall()

    def jobs(self) -> list[tuple[str, str | None, int]]:
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT queue_name, lock, (args->>'run_id')::bigint FROM procrastinate_jobs ORDER BY id"
            ).fetchall()
        return [(str(q), lock, int(run_id)) for q, lock, run_id in rows]


@pytest.fixture
async def world(make_migrated_database: Callable[[], str], tmp_path: Path) -> AsyncIterator[World]:
    url = make_migrated_database()
    proxy = TcpProxy.to_postgres(url)
    pool = AsyncConnectionPool(proxy.url_for(url), min_size=1, max_size=4, open=False, reconnect_timeout=5)
    await pool.open(wait=True)
    store = Spool(tmp_path / "spool", max_bytes=1 << 24, seal=_sealed, unseal=_unsealed)

    async def probe() -> None:
        async with pool.connection(timeout=1.0) as conn:
            await conn.execute("SELECT 1")

    async def verify(check: Check) -> bool:
        return check.application_token == "right"

    intake = Intake(GroupCommit(pool), store, verify=verify, probe=probe)
    try:
        yield World(url, proxy, intake, tmp_path / "spool")
    finally:
        await intake.committer.aclose()
        await pool.close()
        proxy.stop()


async def test_calls_arriving_together_share_commits_and_a_duplicate_fails_no_one(world: World) -> None:
    calls = [robot_call(f"wf{n}") for n in range(300)] + [robot_call(f"wf{n}") for n in range(0, 300, 10)]
    answers = await asyncio.gather(*(world.intake.accept(call) for call in calls))
    outcomes = [answer.outcome for answer in answers]
    assert outcomes.count("accepted") == 300 and outcomes.count("duplicate") == 30
    runs = world.runs()
    assert len(runs) == 300 and {workflow for _, _, workflow, _ in runs} == {f"wf{n}" for n in range(300)}
    # Each run has its job, in its portal's lane, under its own lock.
    assert sorted(world.jobs()) == sorted(("p:portal-a", f"run:{run_id}", run_id) for run_id, *_ in runs)
    accepted_ids = {answer.run_id for answer in answers if answer.outcome == "accepted"}
    assert accepted_ids == {run_id for run_id, *_ in runs}


async def test_a_second_trigger_of_a_waiting_record_coalesces_and_keeps_no_run(world: World) -> None:
    answers = await asyncio.gather(*(world.intake.accept(trigger(deal, n)) for n in range(5) for deal in (1, 2)))
    assert sorted(answer.outcome for answer in answers) == ["accepted"] * 2 + ["coalesced"] * 8
    assert len(world.runs()) == 2 and len(world.jobs()) == 2


async def test_while_the_database_is_away_calls_are_spooled_then_stored_once_in_order(world: World) -> None:
    first = await world.intake.accept(trigger(7, 0))
    assert first.outcome == "accepted"
    with world.proxy.outage():
        away = [await world.intake.accept(robot_call(f"away{n}")) for n in range(20)]
        assert {answer.outcome for answer in away} == {"spooled"} and world.intake.spooling
        # Still away: a drain round changes nothing and loses nothing.
        with pytest.raises(DATABASE_AWAY):
            await world.intake.drain()
        assert len(list(world.spool_dir.glob("*.spool"))) == 1
    # Back, but the spool is not drained yet: a new call goes behind the spooled ones, not ahead of them.
    behind = await world.intake.accept(robot_call("after"))
    assert behind.outcome == "spooled"
    await drained(world.intake)
    assert not world.intake.spooling and list(world.spool_dir.iterdir()) == []
    workflows = [workflow for _, _, workflow, _ in world.runs()]
    assert workflows == [None, *(f"away{n}" for n in range(20)), "after"]
    assert (await world.intake.accept(robot_call("direct"))).outcome == "accepted"


async def test_a_call_stored_and_spooled_both_is_one_run(world: World) -> None:
    """A commit whose answer was lost lands, and its spooled copy (same intake key) is a duplicate when drained."""
    call = robot_call("lost-answer")
    [stored] = await world.intake.committer.store([call])
    assert stored.outcome == "accepted"
    await world.intake.keep("run", {"submission": call.to_json()})
    await world.intake.drain()
    assert [workflow for _, _, workflow, _ in world.runs()] == ["lost-answer"]


async def test_a_spooled_call_whose_portal_does_not_prove_itself_is_dropped(world: World) -> None:
    for token in ("wrong", "right"):
        call = robot_call(f"checked-{token}")
        await world.intake.accept(Submission(call.run, call.task, call.lane_key, check=Check("portal-a", token)))
    await world.intake.drain()
    assert [workflow for _, _, workflow, _ in world.runs()] == ["checked-right"]


async def test_records_of_other_kinds_go_to_their_handler_in_order(world: World) -> None:
    seen: list[str] = []

    async def handler(record: dict[str, object]) -> None:
        seen.append(f"{record['kind']}:{record['n']}:{len(world.runs())}")

    world.intake.handle("portal.install", handler)
    await world.intake.keep("run", {"submission": robot_call("before").to_json()})
    await world.intake.keep("portal.install", {"n": 1})
    await world.intake.keep("run", {"submission": robot_call("after").to_json()})
    await world.intake.drain()
    assert seen == ["portal.install:1:1"]  # after the first run was stored, before the second
    assert len(world.runs()) == 2
