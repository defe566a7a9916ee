"""Leads (issue 18): a partner's leads become deals in the target, their contacts linked once; a lead's status
comes back from the deal's stage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from b24bridge.bridge.intake import status_secret
from b24bridge.portals import crypto
from tests.bridge_flows.conftest import HOOK_SECRET, KEY, BridgeService, result
from tests.sandbox.conftest import CloudPortal

ROUTES = """
portals:
  partner:
    webhook: ${SOURCE_WEBHOOK}
  acme:
    webhook: ${TARGET_WEBHOOK}
routes:
  leads-to-deals:
    source: partner
    source_entity: lead
    target: acme
    target_entity: deal
    triggers:
      hook:
        secret: ${HOOK_SECRET}
    deal:
      TITLE: "{{ lead.TITLE }} (partner lead {{ record.ID }})"
      OPPORTUNITY: {from: OPPORTUNITY, type: money}
      STAGE_ID: {from: STATUS_ID, map: {NEW: NEW, IN_PROCESS: PREPARATION}, default: NEW}
    contact:
      match: [phone]
      fields:
        NAME: {from: NAME}
        LAST_NAME: {from: LAST_NAME}
        PHONE: {from: PHONE}
    status_back:
      stages: {WON: PROCESSED, LOSE: JUNK}
      fields:
        UF_CRM_ACME_DEAL: "{{ target.ID }}"
"""


def _hook(bridge: BridgeService, client: httpx.Client, lead: int) -> None:
    url = f"{bridge.base_url}/bridge/hooks/leads-to-deals"
    answer = client.get(url, params={"secret": HOOK_SECRET, "deal": str(lead)})
    assert answer.status_code == 200, answer.text


def _leads(bridge: BridgeService, count: int, contacts: list[int]) -> list[int]:
    commands = {
        f"l{n}": "crm.lead.add?"
        + httpx.QueryParams(
            {
                "fields[TITLE]": f"Lead {n}",
                "fields[OPPORTUNITY]": str(100 + n),
                "fields[STATUS_ID]": "IN_PROCESS",
                "fields[CONTACT_ID]": str(contacts[n % len(contacts)]),
            }
        ).__str__()
        for n in range(count)
    }
    made: list[int] = []
    names = list(commands)
    for start in range(0, count, 50):
        batch = result(bridge.source, "batch", {"halt": 1, "cmd": {k: commands[k] for k in names[start : start + 50]}})
        made += [int(batch["result"][k]) for k in names[start : start + 50]]
    return made


@pytest.mark.timeout(300)
def test_five_hundred_leads_become_five_hundred_deals_with_their_contacts_linked_once(
    bridge_factory: Callable[..., BridgeService],
) -> None:
    bridge = bridge_factory(ROUTES)
    source, target = bridge.source, bridge.target
    result(source, "crm.lead.userfield.add", {"fields": {"FIELD_NAME": "ACME_DEAL", "USER_TYPE_ID": "string"}})
    contacts = [
        result(source, "crm.contact.add", {"fields": {"NAME": f"Ann{n}", "LAST_NAME": "Lee",
                                                      "PHONE": [{"VALUE": f"+1555000{n:04d}", "VALUE_TYPE": "WORK"}]}})
        for n in range(50)
    ]  # fmt: skip
    leads = _leads(bridge, 500, contacts)
    with httpx.Client(timeout=10) as client:
        for lead in leads:
            _hook(bridge, client, lead)
    runs = bridge.settled_runs(500, timeout=180)  # each delivery writes the fields back in the same run
    assert Counter(run["status"] for run in runs) == {"succeeded": 500}, [r["error"] for r in runs if r["error"]][:3]

    deals = list(_all(target, "crm.deal.list", ["ID", "TITLE", "OPPORTUNITY", "STAGE_ID", "CONTACT_ID", "ORIGIN_ID"]))
    assert len(deals) == 500
    by_lead = {int(d["ORIGIN_ID"].rsplit(":", 1)[1]): d for d in deals}
    assert sorted(by_lead) == sorted(leads)
    assert all(d["ORIGIN_ID"].split(":")[-2] == "LEAD" for d in deals)
    first = by_lead[leads[7]]
    assert first["TITLE"] == f"Lead 7 (partner lead {leads[7]})" and float(first["OPPORTUNITY"]) == 107.0
    assert {d["STAGE_ID"] for d in deals} == {"PREPARATION"}
    made_contacts = list(_all(target, "crm.contact.list", ["ID", "NAME"]))
    assert len(made_contacts) == 50  # each partner contact created once, whatever number of leads share it
    per_contact = Counter(int(d["CONTACT_ID"]) for d in deals)
    assert sorted(per_contact.values()) == [10] * 50 and set(per_contact) == {int(c["ID"]) for c in made_contacts}
    # The deal's ID went back into the lead (status back's fields, written as soon as the deal exists).
    lead = result(source, "crm.lead.get", {"id": leads[7]})
    assert lead["UF_CRM_ACME_DEAL"] == str(first["ID"])

    # The target's team wins the deal: the lead is processed.
    result(target, "crm.deal.update", {"id": first["ID"], "fields": {"STAGE_ID": "WON"}})
    with httpx.Client(timeout=10) as client:
        secret = status_secret(crypto.Keyring(tuple(crypto.parse_keys(KEY))), "leads-to-deals")
        answer = client.get(f"{bridge.base_url}/bridge/hooks/leads-to-deals/status",
                            params={"secret": secret, "deal": str(first["ID"])})  # fmt: skip
        assert answer.status_code == 200, answer.text
    bridge.settled_runs(501)
    assert result(source, "crm.lead.get", {"id": leads[7]})["STATUS_ID"] == "PROCESSED"


def _all(portal: CloudPortal, method: str, select: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    start = 0
    while True:
        answer = portal.call(method, {"select": select, "start": start, "order": {"ID": "ASC"}})
        body = answer.json()
        rows += body["result"]
        if "next" not in body:
            return rows
        start = body["next"]
