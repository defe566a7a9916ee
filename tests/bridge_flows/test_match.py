"""Companies matched by a custom field (issue 18): a partner keeps the tax number in ``UF_CRM_INN``, not in a
requisite, and a company the target already has is linked, never created again."""

from __future__ import annotations

from collections.abc import Callable

from tests.bridge_flows.conftest import BridgeService, move, new_deal, result, webhook_rule
from tests.sandbox.conftest import CloudPortal

ROUTES = """
portals:
  partner:
    webhook: ${SOURCE_WEBHOOK}
  acme:
    webhook: ${TARGET_WEBHOOK}
routes:
  partner-to-acme:
    source: partner
    target: acme
    triggers:
      hook:
        secret: ${HOOK_SECRET}
    deal:
      TITLE: "{{ deal.TITLE }}"
    company:
      match: [{field: UF_CRM_INN}]
      fields:
        TITLE: {from: TITLE}
        UF_CRM_INN: {from: UF_CRM_INN}
"""


def _inn_field(portal: CloudPortal) -> None:
    result(portal, "crm.company.userfield.add", {"fields": {"FIELD_NAME": "INN", "USER_TYPE_ID": "string"}})


def test_a_company_is_matched_by_a_custom_field(bridge_factory: Callable[..., BridgeService]) -> None:
    bridge = bridge_factory(ROUTES)
    source, target = bridge.source, bridge.target
    _inn_field(source)
    _inn_field(target)
    webhook_rule(source, bridge.hook_url("partner-to-acme"))
    known = result(target, "crm.company.add", {"fields": {"TITLE": "Acme Ltd (ours)", "UF_CRM_INN": "7701234567"}})
    other = result(target, "crm.company.add", {"fields": {"TITLE": "Someone else", "UF_CRM_INN": "5000000001"}})

    partner_known = result(source, "crm.company.add", {"fields": {"TITLE": "ACME", "UF_CRM_INN": "7701234567"}})
    partner_new = result(source, "crm.company.add", {"fields": {"TITLE": "Newco", "UF_CRM_INN": "9909909909"}})
    # The same new company twice in the source (two cards, one tax number): one company in the target.
    partner_twin = result(source, "crm.company.add", {"fields": {"TITLE": "Newco (2)", "UF_CRM_INN": "9909909909"}})
    deals = [new_deal(source, TITLE=f"Order {n}", COMPANY_ID=company)
             for n, company in enumerate([partner_known, partner_new], 1)]  # fmt: skip
    for deal in deals:
        move(source, deal)
    bridge.settled_runs(2)
    twin_deal = new_deal(source, TITLE="Order 3", COMPANY_ID=partner_twin)
    move(source, twin_deal)
    runs = bridge.settled_runs(3)
    assert [run["status"] for run in runs] == ["succeeded"] * 3, [run["error"] for run in runs]

    by_title = {d["TITLE"]: d for d in result(target, "crm.deal.list", {"select": ["TITLE", "COMPANY_ID"]})}
    assert int(by_title["Order 1"]["COMPANY_ID"]) == known  # found by UF_CRM_INN, not created
    companies = result(target, "crm.company.list", {"select": ["ID", "TITLE", "UF_CRM_INN"]})
    created = [c for c in companies if int(c["ID"]) not in (known, other)]
    assert [(c["TITLE"], c["UF_CRM_INN"]) for c in created] == [("Newco", "9909909909")]
    assert int(by_title["Order 2"]["COMPANY_ID"]) == int(created[0]["ID"])
    assert int(by_title["Order 3"]["COMPANY_ID"]) == int(created[0]["ID"])
    # Nothing in the route uses a requisite: the source's requisites were never read, nor the target's searched.
    methods = {row["method"] for row in bridge.rows("SELECT DISTINCT method FROM run_calls")}
    assert methods and not any("requisite" in method for method in methods), methods
    assert "crm.company.list" in methods or "batch" in methods, methods
