"""Dedupe claims on a real database: deliveries that claim their keys at once share a statement, and each hears
what it would have heard alone (its key taken, or the run that holds it); links read at once likewise."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from b24bridge.bridge import repository
from b24bridge.bridge.dedupe import Dedupe
from b24bridge.bridge.delivery import Deliverer
from b24bridge.bridge.receivers import AddressPolicy, ReceiverClient
from b24bridge.bridge.repository import Link
from b24bridge.bridge.users import UserDirectory
from b24bridge.db import Database


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """The sizes of the statements ``repository.<name>`` is called with (the real function still runs)."""
    sizes: list[int] = []
    real = getattr(repository, name)

    def counting(conn: Any, items: Any, *args: Any) -> Any:
        sizes.append(len(items))
        return real(conn, items, *args)

    monkeypatch.setattr(repository, name, counting)
    return sizes


async def test_claims_made_together_are_one_statement_and_each_hears_its_own_answer(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    dedupe = Dedupe(database.pool, None, window=60)
    held, expired, mine, fresh = (f"{name}-{uuid.uuid4().hex}" for name in ("held", "expired", "mine", "fresh"))
    async with database.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO bridge_dedupe (key, run_id, expires_at) VALUES (%s, 1, now() + interval '1 minute'),"
            " (%s, 2, now() - interval '1 second'), (%s, 3, now() + interval '1 minute')",
            (held, expired, mine),
        )
    sizes = _counting(monkeypatch, "claim_dedupe")
    answers = await asyncio.gather(
        dedupe.claim(held, 10), dedupe.claim(expired, 11), dedupe.claim(mine, 3), dedupe.claim(fresh, 12),
        dedupe.claim(fresh, 13),  # the same content twice in one wave: the second hears of the first
    )  # fmt: skip
    assert list(answers) == [1, None, None, None, 12]
    assert sizes == [4, 1]  # one statement for the wave; the second claim of a key in the one after
    async with database.pool.connection() as conn:
        rows = await (await conn.execute("SELECT key, run_id FROM bridge_dedupe WHERE key = ANY(%s)",
                                         ([held, expired, mine, fresh],))).fetchall()  # fmt: skip
    assert dict(rows) == {held: 1, expired: 11, mine: 3, fresh: 12}


async def test_links_read_together_are_one_statement_and_each_delivery_gets_its_own(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, other = f"s-{uuid.uuid4().hex}", f"o-{uuid.uuid4().hex}"
    links = [
        Link(source, "t", "DEAL", 1, 101, "r", {}, None, {}, None),
        Link(source, "t", "CONTACT", 5, 105, "r", {}, None, {}, None),
        Link(other, "t", "DEAL", 1, 201, "q", {}, None, {}, None),
    ]
    async with database.pool.connection() as conn:
        await repository.save_links(conn, links)
    sizes = _counting(monkeypatch, "links_of")
    async with httpx.AsyncClient() as http:
        receivers = ReceiverClient(http, AddressPolicy(()))
        deliverer = Deliverer(database.pool, UserDirectory(), Dedupe(database.pool, None, 60), receivers)
        found = await asyncio.gather(
            deliverer.read_links(((source, "t", "DEAL", 1), (source, "t", "CONTACT", 5))),
            deliverer.read_links(((other, "t", "DEAL", 1), (other, "t", "CONTACT", 5))),
            deliverer.read_links(((source, "t", "DEAL", 2),)),
        )
    assert sizes == [5]
    assert [{key: link.target_id for key, link in each.items()} for each in found] == [
        {("DEAL", 1): 101, ("CONTACT", 5): 105},
        {("DEAL", 1): 201},
        {},
    ]
