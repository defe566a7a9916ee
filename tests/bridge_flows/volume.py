"""A partner's world for volume tests: users matched by e-mail, shared contacts and companies, deals with rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.sandbox.conftest import CloudPortal

ROUTES = """
portals:
  partner:
    app: ${SOURCE_DOMAIN}
  acme:
    webhook: ${TARGET_WEBHOOK}
    plan: enterprise
routes:
  partner-to-acme:
    source: partner
    target: acme
    triggers:
      robot: true
    deal:
      TITLE: "{{ deal.TITLE }}"
      STAGE_ID: {from: STAGE_ID, map: {PREPARATION: NEW}}
      ASSIGNED_BY_ID: {user: ASSIGNED_BY_ID, default: 1}
      COMMENTS: "partner deal {{ deal.ID }}"
    contact:
      match: [phone, email]
      fields:
        NAME: {from: NAME}
        LAST_NAME: {from: LAST_NAME}
        PHONE: {from: PHONE}
        EMAIL: {from: EMAIL}
    company:
      match: [tax_number]
      fields:
        TITLE: {from: TITLE}
        tax_number: {from: tax_number}
    products: true
"""

USERS = ("anna@partner.test", "boris@partner.test", "clara@partner.test")


def _batch(portal: CloudPortal, commands: dict[str, str]) -> dict[str, Any]:
    answer = portal.call("batch", {"halt": 1, "cmd": commands})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()["result"]
    assert not body["result_error"], body["result_error"]
    return body["result"]  # type: ignore[no-any-return]


def _ids(result: dict[str, Any]) -> list[int]:
    return [int(v) for _, v in sorted(result.items(), key=lambda kv: int(kv[0][1:]))]


@dataclass
class World:
    deal_ids: list[int]
    contacts: int
    companies: int
    source_users: dict[str, int]
    target_users: dict[str, int]


def build(source: CloudPortal, target: CloudPortal, deals: int, contacts: int = 40, companies: int = 10) -> World:
    """Users with the same e-mails in both portals (different ids), then ``contacts`` and ``companies`` shared by
    ``deals`` deals of two product rows each, assigned round the partner's users (and the admin)."""
    source_users = {e: source.control("POST", "/_sandbox/users", {"name": e, "email": e})["id"] for e in USERS}
    target.control("POST", "/_sandbox/users", {"name": "padding", "email": "other@acme.test"})
    target_users = {e: target.control("POST", "/_sandbox/users", {"name": e, "email": e})["id"] for e in USERS}
    contact_ids = _ids(_batch(source, {
        f"c{i}": f"crm.contact.add?fields[NAME]=N{i}&fields[LAST_NAME]=L{i}"
                 f"&fields[PHONE][0][VALUE]=%2B1555000{i:04d}&fields[PHONE][0][VALUE_TYPE]=WORK"
        for i in range(contacts)}))  # fmt: skip
    company_ids = _ids(_batch(source, {f"c{i}": f"crm.company.add?fields[TITLE]=Co{i}" for i in range(companies)}))
    _batch(source, {
        f"r{i}": f"crm.requisite.add?fields[ENTITY_TYPE_ID]=4&fields[ENTITY_ID]={cid}&fields[PRESET_ID]=1"
                 f"&fields[NAME]=Co{i}&fields[RQ_INN]=77{i:08d}"
        for i, cid in enumerate(company_ids)})  # fmt: skip
    assignees = [*source_users.values(), 1]
    deal_ids: list[int] = []
    for start in range(0, deals, 25):
        chunk = range(start, min(deals, start + 25))
        commands: dict[str, str] = {}
        for i in chunk:
            commands[f"d{i}"] = (
                f"crm.deal.add?fields[TITLE]=Deal {i}&fields[STAGE_ID]=NEW"
                f"&fields[CONTACT_ID]={contact_ids[i % contacts]}&fields[COMPANY_ID]={company_ids[i % companies]}"
                f"&fields[ASSIGNED_BY_ID]={assignees[i % len(assignees)]}"
            )
            commands[f"p{i}"] = (
                f"crm.deal.productrows.set?id=$result[d{i}]&rows[0][PRODUCT_NAME]=Widget&rows[0][PRICE]=10"
                f"&rows[0][QUANTITY]={1 + i % 3}&rows[1][PRODUCT_NAME]=Service&rows[1][PRICE]=99.5"
            )
        done = _batch(source, commands)
        deal_ids += [int(done[f"d{i}"]) for i in chunk]
    return World(deal_ids, contacts, companies, source_users, target_users)


def fire(source: CloudPortal, deal_ids: list[int], stage: str = "PREPARATION") -> None:
    """Half the deals into the stage within one second, the rest over the next four."""
    half = len(deal_ids) // 2
    source.control("POST", "/_sandbox/deals/move", {"deal_ids": deal_ids[:half], "stage_id": stage, "over_seconds": 1})
    time.sleep(1)
    rest = {"deal_ids": deal_ids[half:], "stage_id": stage, "over_seconds": 4}
    source.control("POST", "/_sandbox/deals/move", rest)


def every(portal: CloudPortal, method: str, select: list[str]) -> list[dict[str, Any]]:
    """Every row of a list method (page by page)."""
    rows: list[dict[str, Any]] = []
    start = 0
    while True:
        answer = portal.call(method, {"select": select, "start": start, "order": {"ID": "ASC"}})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        rows += body["result"]
        if "next" not in body:
            return rows
        start = body["next"]


def check_target(
    world: World,
    source: CloudPortal,
    target: CloudPortal,
    workflows: list[dict[str, Any]],
    runs_of: Callable[[int], Any] = lambda deal_id: None,
) -> None:
    """Every deal arrived once, linked to its contact and company (no duplicates), rows copied, users matched."""
    deals = every(target, "crm.deal.list", ["ID", "TITLE", "ORIGIN_ID", "CONTACT_ID", "COMPANY_ID", "ASSIGNED_BY_ID",
                                            "OPPORTUNITY", "STAGE_ID"])  # fmt: skip
    origins = [d["ORIGIN_ID"] for d in deals]
    twice = sorted({o for o in origins if origins.count(o) > 1})
    missing = sorted(set(world.deal_ids) - {int(o.rsplit(":", 1)[1]) for o in origins})
    assert len(deals) == len(world.deal_ids) and not twice, (
        f"{len(deals)} target deals; more than once: {twice}; missing: {[(m, runs_of(m)) for m in missing]}"
    )
    contacts = every(target, "crm.contact.list", ["ID", "ORIGIN_ID"])
    assert len(contacts) == world.contacts, f"{len(contacts)} target contacts: {contacts}"
    companies = every(target, "crm.company.list", ["ID", "ORIGIN_ID"])
    assert len(companies) == world.companies, f"{len(companies)} target companies: {companies}"
    by_id = {int(d["ID"]): d for d in deals}
    answered = {int(w["return_values"]["target_deal_id"]) for w in workflows}
    assert answered == set(by_id), "every robot answered with its own target deal"
    expected_users = {world.source_users[e]: world.target_users[e] for e in USERS} | {1: 1}
    source_deals = {int(d["ID"]): d for d in every(source, "crm.deal.list", ["ID", "ASSIGNED_BY_ID", "OPPORTUNITY"])}
    for deal in deals:
        source_deal = source_deals[int(deal["ORIGIN_ID"].rsplit(":", 1)[1])]
        assert int(deal["ASSIGNED_BY_ID"]) == expected_users[int(source_deal["ASSIGNED_BY_ID"])]
        assert float(deal["OPPORTUNITY"]) == float(source_deal["OPPORTUNITY"])  # the rows make the total
        assert deal["STAGE_ID"] == "NEW" and int(deal["CONTACT_ID"]) and int(deal["COMPANY_ID"])
