"""Product rows, duplicate search, reference lists and funnels over real HTTP."""

from __future__ import annotations

from typing import Any

from tests.sandbox.conftest import LiveSandbox


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


def test_productrows_replace_and_opportunity(sandbox: LiveSandbox) -> None:
    did = ok(sandbox.call("crm.deal.add", {"fields": {"TITLE": "x"}}))
    rows = [{"PRODUCT_NAME": "A", "PRICE": 899.1, "DISCOUNT_TYPE_ID": 2, "DISCOUNT_RATE": 10, "QUANTITY": 2},
            {"PRICE": 100, "SORT": 5}]  # fmt: skip
    assert ok(sandbox.call("crm.deal.productrows.set", {"id": did, "rows": rows})) is True
    got = ok(sandbox.call("crm.deal.productrows.get", {"id": did}))
    assert [r["SORT"] for r in got] == [0, 5]
    first = got[0]
    assert first["OWNER_ID"] == str(did) and first["OWNER_TYPE"] == "D" and isinstance(first["ID"], str)
    assert first["PRICE_NETTO"] == 999 and first["DISCOUNT_SUM"] == 99.9 and first["PRICE_ACCOUNT"] == "899.10"
    assert got[1]["PRODUCT_NAME"] == f"[{got[1]['ID']}]" and got[1]["QUANTITY"] == 1
    assert ok(sandbox.call("crm.deal.get", {"id": did}))["OPPORTUNITY"] == "1898.20"
    ok(sandbox.call("crm.deal.productrows.set", {"id": did, "rows": [{"PRODUCT_NAME": "B", "PRICE": 5}]}))
    got = ok(sandbox.call("crm.deal.productrows.get", {"id": did}))
    assert [r["PRODUCT_NAME"] for r in got] == ["B"]
    assert ok(sandbox.call("crm.deal.get", {"id": did}))["OPPORTUNITY"] == "5.00"


def test_productrows_manual_opportunity_and_errors(sandbox: LiveSandbox) -> None:
    did = ok(sandbox.call("crm.deal.add", {"fields": {"OPPORTUNITY": 7, "IS_MANUAL_OPPORTUNITY": "Y"}}))
    ok(sandbox.call("crm.deal.productrows.set", {"id": did, "rows": [{"PRICE": 100}]}))
    assert ok(sandbox.call("crm.deal.get", {"id": did}))["OPPORTUNITY"] == "7.00"
    bad = sandbox.call("crm.deal.productrows.set", {"id": did, "rows": [{"PRICE": 1, "DISCOUNT_TYPE_ID": 1}]})
    assert bad.status_code == 400 and bad.json()["error"] == "ERROR_CORE"
    assert bad.json()["error_description"].startswith("Discount Sum (DISCOUNT_SUM) is required if Monetary")
    assert len(ok(sandbox.call("crm.deal.productrows.get", {"id": did}))) == 1  # old rows kept
    missing = sandbox.call("crm.deal.productrows.get", {"id": 999})
    assert missing.status_code == 400 and missing.json() == {"error": "", "error_description": "Not found"}
    bad_id = sandbox.call("crm.deal.productrows.get", {})
    assert bad_id.json()["error_description"] == "The parameter id is invalid or not defined."


def test_findbycomm(sandbox: LiveSandbox) -> None:
    c1 = ok(sandbox.call("crm.contact.add", {"fields": {"PHONE": [{"VALUE": "+1 (555) 123-4567 ext. 12"}]}}))
    c2 = ok(sandbox.call("crm.contact.add", {"fields": {"EMAIL": [{"VALUE": "Ann@Example.com"}]}}))
    co = ok(sandbox.call("crm.company.add", {"fields": {"TITLE": "x", "PHONE": [{"VALUE": "15551234567"}]}}))
    hit = ok(sandbox.call("crm.duplicate.findbycomm", {"type": "PHONE", "values": ["+1-555-123-4567"]}))
    assert hit == {"CONTACT": [c1], "COMPANY": [co]}
    only = ok(sandbox.call("crm.duplicate.findbycomm", {"type": "PHONE", "values": ["15551234567"],
                                                        "entity_type": "CONTACT"}))  # fmt: skip
    assert only == {"CONTACT": [c1]}
    assert ok(sandbox.call("crm.duplicate.findbycomm", {"type": "EMAIL", "values": ["ann@example.com"]})) == {
        "CONTACT": [c2]
    }
    assert ok(sandbox.call("crm.duplicate.findbycomm", {"type": "EMAIL", "values": ["no@x.io"]})) == []
    response = sandbox.call("crm.duplicate.findbycomm", {"values": ["1"]})
    assert response.status_code == 400
    assert response.json() == {"error": "Communication type is not defined",
                               "error_description": "Parameter 'type' is required."}  # fmt: skip
    response = sandbox.call("crm.duplicate.findbycomm", {"type": "PHONE"})
    assert response.json()["error"] == "Communication values is not defined"
    response = sandbox.call("crm.duplicate.findbycomm", {"type": "FAX", "values": ["1"]})
    assert response.json()["error"] == "Communication type 'FAX' is not supported in current context"


def test_findbycomm_uses_first_20_values(sandbox: LiveSandbox) -> None:
    ok(sandbox.call("crm.contact.add", {"fields": {"PHONE": [{"VALUE": "999"}]}}))
    values = [str(100 + i) for i in range(20)] + ["999"]
    assert ok(sandbox.call("crm.duplicate.findbycomm", {"type": "PHONE", "values": values})) == []


def test_status_and_category_lists(sandbox: LiveSandbox) -> None:
    response = sandbox.call("crm.status.list", {"order": {"SORT": "ASC"}, "filter": {"ENTITY_ID": "DEAL_STAGE"}})
    data = response.json()
    assert data["total"] == 8 and [r["STATUS_ID"] for r in data["result"]][:2] == ["NEW", "PREPARATION"]
    assert data["result"][5] == {"ID": "111", "ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "WON", "NAME": "Deal successful",
                                 "NAME_INIT": "Deal successful", "SORT": "60", "SYSTEM": "Y", "CATEGORY_ID": None,
                                 "COLOR": "#7BD500", "SEMANTICS": "S",
                                 "EXTRA": {"SEMANTICS": "success", "COLOR": "#7BD500"}}  # fmt: skip
    sources = ok(sandbox.call("crm.status.list", {"filter": {"ENTITY_ID": "SOURCE"}}))
    assert "WEB" in [r["STATUS_ID"] for r in sources]
    cats = sandbox.call("crm.category.list", {"entityTypeId": 2}).json()
    assert cats["result"] == {"categories": [{"id": 0, "name": "General", "sort": 300, "entityTypeId": 2,
                                              "isDefault": "Y"}]} and cats["total"] == 1  # fmt: skip
    missing = sandbox.call("crm.category.list", {"entityTypeId": 999})
    assert missing.status_code == 400 and missing.json()["error"] == "NOT_FOUND"


def test_category_list_envelope_plain_and_in_batch(sandbox: LiveSandbox) -> None:
    # A non-list result with a total: the envelope and the batch sections treat it like any list answer.
    plain = sandbox.call("crm.category.list", {"entityTypeId": 2}).json()
    assert list(plain) == ["result", "total", "time"]
    assert list(plain["result"]) == ["categories"]
    batch = sandbox.call("batch", {"cmd": {"cats": "crm.category.list?entityTypeId=2", "deals": "crm.deal.list"}})
    sections = batch.json()["result"]
    assert sections["result"]["cats"] == plain["result"]
    assert sections["result_total"] == {"cats": 1, "deals": 0}
    assert sections["result_next"] == []
    assert sections["result"]["deals"] == []
