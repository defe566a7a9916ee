"""What a sync between portals relies on: DATE_MODIFY/MODIFY_BY_ID on every change, ONCRMDEAL* events for every
change (stage moves by automation and in other funnels included), ORIGINATOR_ID/ORIGIN_ID filters, a deal's set of
contacts (docs crm/deals/contacts/*.md) and product rows (REFERENCE 6.4, 6.5, 7.2)."""

from __future__ import annotations

from typing import Any

from tests.livehttp import Receiver
from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import form, installed_app, rest

ROW_KEYS = {
    "ID", "OWNER_ID", "OWNER_TYPE", "PRODUCT_ID", "PRODUCT_NAME", "ORIGINAL_PRODUCT_NAME", "PRODUCT_DESCRIPTION",
    "PRICE", "PRICE_EXCLUSIVE", "PRICE_NETTO", "PRICE_BRUTTO", "PRICE_ACCOUNT", "QUANTITY", "DISCOUNT_TYPE_ID",
    "DISCOUNT_RATE", "DISCOUNT_SUM", "TAX_RATE", "TAX_INCLUDED", "CUSTOMIZED", "MEASURE_CODE", "MEASURE_NAME", "SORT",
    "XML_ID", "TYPE", "STORE_ID", "RESERVE_ID", "DATE_RESERVE_END", "RESERVE_QUANTITY",
}  # fmt: skip


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


def deal(sandbox: LiveSandbox, deal_id: int) -> dict[str, Any]:
    got: dict[str, Any] = ok(sandbox.call("crm.deal.get", {"id": deal_id}))
    return got


def later(sandbox: LiveSandbox) -> None:
    """Move the portal's clock so that the next change gets a later DATE_MODIFY (whole seconds on the wire)."""
    sandbox.control("POST", "/_sandbox/clock", {"advance": 5})


def test_date_modify_and_modify_by_follow_every_change(sandbox: LiveSandbox) -> None:
    maria = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 2, "scopes": ["crm"]})["url"]
    deal_id = ok(sandbox.call("crm.deal.add", {"fields": {"TITLE": "x"}}))
    created = deal(sandbox, deal_id)
    assert created["DATE_MODIFY"] == created["DATE_CREATE"] and created["MODIFY_BY_ID"] == "1"
    later(sandbox)
    ok(sandbox.http.post(maria + "crm.deal.update", json={"id": deal_id, "fields": {"TITLE": "y"}}))
    edited = deal(sandbox, deal_id)
    assert edited["DATE_MODIFY"] > created["DATE_MODIFY"] and edited["MODIFY_BY_ID"] == "2"
    later(sandbox)
    sandbox.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": "PREPARATION"})
    moved = deal(sandbox, deal_id)
    assert moved["DATE_MODIFY"] > edited["DATE_MODIFY"] and moved["DATE_MODIFY"] == moved["MOVED_TIME"]
    later(sandbox)
    ok(sandbox.call("crm.deal.productrows.set", {"id": deal_id, "rows": [{"PRODUCT_NAME": "A", "PRICE": 10}]}))
    assert deal(sandbox, deal_id)["DATE_MODIFY"] > moved["DATE_MODIFY"]
    changed = ok(sandbox.call("crm.deal.list", {"filter": {">DATE_MODIFY": moved["DATE_MODIFY"]}, "select": ["ID"]}))
    assert [d["ID"] for d in changed] == [str(deal_id)]


def test_every_change_sends_its_event(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, installed = installed_app(sandbox, receiver)
    token = installed["auth[access_token]"]
    for event in ("ONCRMDEALADD", "ONCRMDEALUPDATE"):
        assert rest(sandbox, "event.bind", token, event=event, handler=receiver.url(f"/{event}")).status_code == 200
    funnel = ok(sandbox.call("crm.category.add", {"entityTypeId": 2, "fields": {"name": "B"}}))["category"]["id"]
    first = ok(sandbox.call("crm.deal.add", {"fields": {"CATEGORY_ID": funnel}}))
    second = ok(sandbox.call("crm.deal.add", {"fields": {}}))
    sandbox.control("POST", f"/_sandbox/deals/{first}/stage", {"stage_id": f"C{funnel}:EXECUTING"})
    sandbox.control("POST", "/_sandbox/deals/move", {"deal_ids": [second], "stage_id": "WON"})
    contact = ok(sandbox.call("crm.contact.add", {"fields": {"NAME": "Ann"}}))
    ok(sandbox.call("crm.deal.contact.items.set", {"id": first, "items": [{"CONTACT_ID": contact}]}))
    sandbox.control("POST", "/_sandbox/settle")
    added = receiver.wait_for(2, path="/ONCRMDEALADD")
    updated = receiver.wait_for(3, path="/ONCRMDEALUPDATE")
    assert sorted(form(r)["data[FIELDS][ID]"] for r in added) == sorted([str(first), str(second)])
    # Moves by automation carry no tokens; the REST change carries the caller's (REFERENCE 7.2).
    seen = sorted((int(form(r)["data[FIELDS][ID]"]), "auth[access_token]" in form(r)) for r in updated)
    assert seen == sorted([(first, False), (second, False), (first, True)])
    assert all(form(r)["auth[application_token]"] == installed["auth[application_token]"] for r in updated)
    assert len(receiver.requests) == 1 + 5  # the install event, then exactly one call per change


def test_origin_fields_are_stored_and_filterable(sandbox: LiveSandbox) -> None:
    origin = {"ORIGINATOR_ID": "portal-a", "ORIGIN_ID": "deal-17"}
    for entity, extra in (("deal", {}), ("contact", {"NAME": "Ann"}), ("company", {"TITLE": "Acme"})):
        wanted = ok(sandbox.call(f"crm.{entity}.add", {"fields": {**origin, **extra}}))
        ok(sandbox.call(f"crm.{entity}.add", {"fields": {"ORIGINATOR_ID": "portal-a", "ORIGIN_ID": "x", **extra}}))
        ok(sandbox.call(f"crm.{entity}.add", {"fields": extra}))
        found = ok(sandbox.call(f"crm.{entity}.list", {"filter": origin, "select": ["ORIGINATOR_ID", "ORIGIN_ID"]}))
        assert found == [{"ID": str(wanted), **origin}]
        assert len(ok(sandbox.call(f"crm.{entity}.list", {"filter": {"ORIGINATOR_ID": "portal-a"}}))) == 2


def test_deal_contact_set(sandbox: LiveSandbox) -> None:
    ann, bob, cid = (ok(sandbox.call("crm.contact.add", {"fields": {"NAME": n}})) for n in ("Ann", "Bob", "Cid"))
    deal_id = ok(sandbox.call("crm.deal.add", {"fields": {"CONTACT_IDS": [ann, bob]}}))
    assert ok(sandbox.call("crm.deal.contact.items.get", {"id": deal_id})) == [
        {"CONTACT_ID": ann, "SORT": 10, "ROLE_ID": 0, "IS_PRIMARY": "Y"},
        {"CONTACT_ID": bob, "SORT": 20, "ROLE_ID": 0, "IS_PRIMARY": "N"},
    ]
    items = [{"CONTACT_ID": cid, "SORT": 100}, {"CONTACT_ID": ann, "SORT": 50, "IS_PRIMARY": "Y"}]
    assert ok(sandbox.call("crm.deal.contact.items.set", {"id": deal_id, "items": items})) is True
    assert ok(sandbox.call("crm.deal.contact.items.get", {"id": deal_id})) == [
        {"CONTACT_ID": ann, "SORT": 50, "ROLE_ID": 0, "IS_PRIMARY": "Y"},
        {"CONTACT_ID": cid, "SORT": 100, "ROLE_ID": 0, "IS_PRIMARY": "N"},
    ]
    assert deal(sandbox, deal_id)["CONTACT_ID"] == str(ann)
    ok(sandbox.call("crm.deal.contact.add", {"id": deal_id, "fields": {"CONTACT_ID": bob, "IS_PRIMARY": "Y"}}))
    assert deal(sandbox, deal_id)["CONTACT_ID"] == str(bob)
    ok(sandbox.call("crm.deal.contact.delete", {"id": deal_id, "fields": {"CONTACT_ID": bob}}))
    primary = [i for i in ok(sandbox.call("crm.deal.contact.items.get", {"id": deal_id})) if i["IS_PRIMARY"] == "Y"]
    assert len(primary) == 1 and deal(sandbox, deal_id)["CONTACT_ID"] == str(primary[0]["CONTACT_ID"])
    ok(sandbox.call("crm.deal.contact.items.delete", {"id": deal_id}))
    assert ok(sandbox.call("crm.deal.contact.items.get", {"id": deal_id})) == []
    assert deal(sandbox, deal_id)["CONTACT_ID"] is None
    missing = sandbox.call("crm.deal.contact.items.get", {"id": 999})
    assert missing.json() == {"error": "", "error_description": "Not found."}
    invalid = sandbox.call("crm.deal.contact.items.set", {"id": deal_id, "items": "x"})
    assert invalid.json() == {"error": "", "error_description": "The parameter items must be array."}
    assert ok(sandbox.call("crm.deal.contact.fields"))["CONTACT_ID"]["isRequired"] is True


def test_product_rows_have_the_documented_fields(sandbox: LiveSandbox) -> None:
    deal_id = ok(sandbox.call("crm.deal.add", {"fields": {}}))
    rows = [{"PRODUCT_NAME": "Licence", "PRICE": 120, "QUANTITY": 3, "TAX_RATE": 20, "TAX_INCLUDED": "Y"}]
    ok(sandbox.call("crm.deal.productrows.set", {"id": deal_id, "rows": rows}))
    [row] = ok(sandbox.call("crm.deal.productrows.get", {"id": deal_id}))
    assert set(row) == ROW_KEYS
    assert (row["PRICE"], row["PRICE_EXCLUSIVE"], row["QUANTITY"], row["TAX_INCLUDED"]) == (120, 100, 3, "Y")
    got = deal(sandbox, deal_id)
    assert (got["OPPORTUNITY"], got["TAX_VALUE"]) == ("360.00", "60.00")
