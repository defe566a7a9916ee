"""``--state`` and ``POST /_sandbox/reset`` cover funnels, stages, user fields, requisites, deal contacts and
outbound webhook rules too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.sandbox.conftest import LiveSandbox

Factory = Callable[..., LiveSandbox]


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


def build_world(portal: LiveSandbox) -> dict[str, Any]:
    """Some of everything; returns the ids to look for."""
    funnel = ok(portal.call("crm.category.add", {"entityTypeId": 2, "fields": {"name": "Partners"}}))["category"]["id"]
    stage = {"ENTITY_ID": f"DEAL_STAGE_{funnel}", "STATUS_ID": "SIGNED", "NAME": "Signed", "SORT": 45}
    ok(portal.call("crm.status.add", {"fields": stage}))
    field = ok(portal.call("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "SCORE", "USER_TYPE_ID": "integer"}}))
    company = ok(portal.call("crm.company.add", {"fields": {"TITLE": "Acme"}}))
    requisite_fields = {"ENTITY_TYPE_ID": 4, "ENTITY_ID": company, "PRESET_ID": 1, "NAME": "Org", "RQ_INN": "77"}
    requisite = ok(portal.call("crm.requisite.add", {"fields": requisite_fields}))
    contacts = [ok(portal.call("crm.contact.add", {"fields": {"NAME": n}})) for n in ("Ann", "Bob")]
    deal_fields = {"CATEGORY_ID": funnel, "STAGE_ID": f"C{funnel}:SIGNED", "UF_CRM_SCORE": "7", "COMPANY_ID": company}
    deal = ok(portal.call("crm.deal.add", {"fields": deal_fields}))
    items = [{"CONTACT_ID": contacts[1], "SORT": 5}, {"CONTACT_ID": contacts[0], "SORT": 9, "IS_PRIMARY": "Y"}]
    ok(portal.call("crm.deal.contact.items.set", {"id": deal, "items": items}))
    rule = {
        "type": "webhook",
        "stage_id": f"C{funnel}:WON",
        "category_id": funnel,
        "handler": "https://a.example.com/h",
    }
    portal.control("POST", "/_sandbox/automation/rules", rule)
    return {"funnel": funnel, "field": field, "requisite": requisite, "deal": deal, "contacts": contacts}


def test_saved_and_loaded(sandbox_factory: Factory, tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    first = sandbox_factory(limits_enabled=False, state_path=path)
    made = build_world(first)
    first.control("POST", "/_sandbox/state/save")
    first.stop()

    second = sandbox_factory(limits_enabled=False, state_path=path)
    funnel = made["funnel"]
    categories = ok(second.call("crm.category.list", {"entityTypeId": 2}))["categories"]
    assert [c["name"] for c in categories] == ["General", "Partners"]  # by sort: 300, then the new funnel's 500
    codes = [
        r["STATUS_ID"] for r in ok(second.call("crm.status.list", {"filter": {"ENTITY_ID": f"DEAL_STAGE_{funnel}"}}))
    ]
    assert f"C{funnel}:SIGNED" in codes
    deal = ok(second.call("crm.deal.get", {"id": made["deal"]}))
    assert (deal["STAGE_ID"], deal["UF_CRM_SCORE"], deal["CONTACT_ID"]) == (
        f"C{funnel}:SIGNED", "7", str(made["contacts"][0]))  # fmt: skip
    assert [i["CONTACT_ID"] for i in ok(second.call("crm.deal.contact.items.get", {"id": made["deal"]}))] == [
        made["contacts"][1], made["contacts"][0]]  # fmt: skip
    assert ok(second.call("crm.deal.userfield.get", {"id": made["field"]}))["FIELD_NAME"] == "UF_CRM_SCORE"
    assert ok(second.call("crm.requisite.get", {"id": made["requisite"]}))["RQ_INN"] == "77"
    [rule] = second.control("GET", "/_sandbox/automation/rules")["rules"]
    assert (rule["type"], rule["handler"]) == ("webhook", "https://a.example.com/h")
    # Counters survive: new ids do not collide with saved ones.
    again = ok(second.call("crm.category.add", {"entityTypeId": 2, "fields": {"name": "Next"}}))["category"]["id"]
    assert again == funnel + 1
    new_field = {"fields": {"FIELD_NAME": "OTHER", "USER_TYPE_ID": "string"}}
    assert ok(second.call("crm.deal.userfield.add", new_field)) == made["field"] + 1


def test_reset_forgets_them(sandbox: LiveSandbox) -> None:
    build_world(sandbox)
    sandbox.reset()
    categories = ok(sandbox.call("crm.category.list", {"entityTypeId": 2}))["categories"]
    assert [c["id"] for c in categories] == [0]
    assert len(ok(sandbox.call("crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE"}}))) == 8
    assert ok(sandbox.call("crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE_1"}})) == []
    assert ok(sandbox.call("crm.deal.userfield.list")) == []
    assert sandbox.call("crm.requisite.list").json()["total"] == 0
    assert "UF_CRM_SCORE" not in ok(sandbox.call("crm.deal.fields"))
    assert sandbox.control("GET", "/_sandbox/automation/rules")["total"] == 0
    # A fresh funnel numbering, too.
    assert ok(sandbox.call("crm.category.add", {"entityTypeId": 2, "fields": {"name": "A"}}))["category"]["id"] == 1
