"""Claims on the creation of a target contact or company (placeholder rows in the id map), on a real database: a
claim whose attempt is over is taken over at once, and claims are taken in one order so two deliveries never each
hold what the other waits for."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from b24bridge.bridge import repository
from b24bridge.bridge.connections import Endpoint
from b24bridge.bridge.route_model import EntityRule
from b24bridge.bridge.writer import TargetWriter
from b24bridge.db import Database
from b24bridge.runs.schemas import NewRun
from b24bridge.runs.service import RunLog
from tests.bridge.conftest import example_route

STALE = dt.timedelta(seconds=60)


async def _run(runs: RunLog, deal: int) -> int:
    new = NewRun(member_id="m", document_id=["crm", "CCrmDocumentDeal", f"DEAL_{deal}"], inputs={"deal_id": deal},
                 kind="bridge", route="r", trigger="hook")  # fmt: skip
    async with runs.pool.connection() as conn:
        run_id = await runs.open(conn, new)
    assert run_id is not None
    await runs.begin_attempt(run_id)
    return run_id


async def test_a_claim_is_held_while_its_attempt_lives_and_taken_over_once_it_is_over(database: Database) -> None:
    runs = RunLog(database.pool)
    source, target = f"s-{uuid.uuid4().hex}", "t"
    first, second = await _run(runs, 1), await _run(runs, 2)

    async def claim(run_id: int, source_id: int = 7) -> Any:
        async with database.pool.connection() as conn:
            return await repository.claim_creation(conn, source, target, "CONTACT", source_id, "r", STALE, run_id)

    assert await claim(first) == "new"
    assert await claim(second) is None  # the first run's attempt is alive: wait for it
    await runs.begin_attempt(first)  # its worker was killed; the job runs again
    assert await claim(second) == "taken_over"  # whatever the first attempt created, the taker looks up
    assert await claim(first) is None  # now the second run's, alive
    assert await claim(first, 8) == "new"
    await runs.finish(first, "failed", error="gave up")  # an ended run's claim is no one's
    assert await claim(second, 8) == "taken_over"


def _party(record_id: int) -> dict[str, Any]:
    return {"ID": str(record_id)}


async def test_claims_go_contact_first_so_crossed_deliveries_never_wait_for_each_other(database: Database) -> None:
    """Delivery A needs contact 1 and company 2; B needs company 2 and contact 1. B's company claim waits until its
    contact claim is settled, so it never holds the company A waits for. Claimed as they came (B's company while
    A held the contact), each waited for the other until the claim wait ran out (20 s) and both failed."""
    runs = RunLog(database.pool)
    route = example_route()
    rule = EntityRule(fields={}, match=(), line=1)  # nothing to look up: the claims alone decide
    endpoint = Endpoint(portal=None, key=f"t-{uuid.uuid4().hex}", name="t", domain="t", web_url="")  # type: ignore[arg-type]

    async def nothing(_: Any) -> None:
        return None

    def writer(run_id: int) -> TargetWriter:
        return TargetWriter(database.pool, {}, route, "s", endpoint, {}, nothing, run_id)

    a, b = writer(await _run(runs, 1)), writer(await _run(runs, 2))
    a_contact = asyncio.ensure_future(a.party("CONTACT", rule, _party(1), {}, False))
    await asyncio.sleep(0.3)  # A holds the contact's claim
    b_both = asyncio.gather(
        b.party("CONTACT", rule, _party(1), {}, False), b.party("COMPANY", rule, _party(2), {}, False)
    )
    await asyncio.sleep(0.3)  # B waits for the contact; its company is not claimed meanwhile
    async with asyncio.timeout(5):
        a_refs = await asyncio.gather(a_contact, a.party("COMPANY", rule, _party(2), {}, False))
    assert list(a_refs) == ["$result[contact]", "$result[company]"]
    assert not b_both.done()
    await a.abandon(RuntimeError("the test ends here"))  # A's creations fail for certain: B may claim them
    async with asyncio.timeout(5):
        assert list(await b_both) == ["$result[contact]", "$result[company]"]
