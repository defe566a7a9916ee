"""Legacy ``crm.lead.*`` over real HTTP: fields, documented defaults, errors, multi-fields, list filters, user fields,
product rows and lead stages (docs api-reference/crm/leads/*.md, crm/status/*.md)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from b24bridge.sandbox.state import World, seed_world
from tests.sandbox.conftest import LiveSandbox

# The keys of crm.lead.fields, in the order of docs crm-lead-fields.md.
DOCS_FIELDS = [
    "ID", "TITLE", "HONORIFIC", "NAME", "SECOND_NAME", "LAST_NAME", "BIRTHDATE", "COMPANY_TITLE", "SOURCE_ID",
    "SOURCE_DESCRIPTION", "STATUS_ID", "STATUS_DESCRIPTION", "STATUS_SEMANTIC_ID", "POST", "ADDRESS", "ADDRESS_2",
    "ADDRESS_CITY", "ADDRESS_POSTAL_CODE", "ADDRESS_REGION", "ADDRESS_PROVINCE", "ADDRESS_COUNTRY",
    "ADDRESS_COUNTRY_CODE", "ADDRESS_LOC_ADDR_ID", "CURRENCY_ID", "OPPORTUNITY", "IS_MANUAL_OPPORTUNITY", "OPENED",
    "COMMENTS", "HAS_PHONE", "HAS_EMAIL", "HAS_IMOL", "ASSIGNED_BY_ID", "CREATED_BY_ID", "MODIFY_BY_ID", "MOVED_BY_ID",
    "DATE_CREATE", "DATE_MODIFY", "MOVED_TIME", "COMPANY_ID", "CONTACT_ID", "CONTACT_IDS", "IS_RETURN_CUSTOMER",
    "DATE_CLOSED", "ORIGINATOR_ID", "ORIGIN_ID", "UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM",
    "LAST_ACTIVITY_TIME", "LAST_ACTIVITY_BY", "PHONE", "EMAIL", "WEB", "IM", "LINK",
]  # fmt: skip


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


def add_lead(sandbox: LiveSandbox, **fields: Any) -> int:
    lead_id: int = ok(sandbox.call("crm.lead.add", {"fields": fields}))
    return lead_id


def get_lead(sandbox: LiveSandbox, lead_id: int) -> dict[str, Any]:
    lead: dict[str, Any] = ok(sandbox.call("crm.lead.get", {"id": lead_id}))
    return lead


def test_fields_follow_the_docs(sandbox: LiveSandbox) -> None:
    fields = ok(sandbox.call("crm.lead.fields"))
    assert list(fields) == DOCS_FIELDS
    assert fields["STATUS_ID"] == {
        "type": "crm_status", "isRequired": False, "isReadOnly": False, "isImmutable": False, "isMultiple": False,
        "isDynamic": False, "statusType": "STATUS", "title": "Stage"}  # fmt: skip
    titles = {name: fields[name]["title"] for name in ("TITLE", "ADDRESS_2", "OPPORTUNITY", "MOVED_TIME", "LINK")}
    assert titles == {"TITLE": "Lead Title", "ADDRESS_2": "Address (Line 2)", "OPPORTUNITY": "Amount",
                      "MOVED_TIME": "MOVED_TIME", "LINK": "LINK"}  # fmt: skip
    read_only = sorted(name for name, field in fields.items() if field["isReadOnly"])
    assert read_only == sorted([
        "ID", "STATUS_SEMANTIC_ID", "HAS_PHONE", "HAS_EMAIL", "HAS_IMOL", "CREATED_BY_ID", "MODIFY_BY_ID",
        "MOVED_BY_ID", "DATE_CREATE", "DATE_MODIFY", "MOVED_TIME", "IS_RETURN_CUSTOMER", "DATE_CLOSED",
        "LAST_ACTIVITY_TIME", "LAST_ACTIVITY_BY"])  # fmt: skip
    multiple = sorted(name for name, field in fields.items() if field["isMultiple"])
    assert multiple == ["CONTACT_IDS", "EMAIL", "IM", "LINK", "PHONE", "WEB"]


def test_add_fills_the_documented_defaults(sandbox: LiveSandbox) -> None:
    lead_id = add_lead(sandbox, NAME="Ann", ORIGINATOR_ID="shop", TITLE="")
    lead = get_lead(sandbox, lead_id)
    assert lead["ID"] == str(lead_id) and lead["TITLE"] == f"Lead #{lead_id}"
    assert (lead["STATUS_ID"], lead["STATUS_SEMANTIC_ID"], lead["SOURCE_ID"]) == ("NEW", "P", "CALL")
    assert (lead["CURRENCY_ID"], lead["OPPORTUNITY"], lead["IS_MANUAL_OPPORTUNITY"]) == ("USD", "0.00", "N")
    assert (lead["OPENED"], lead["IS_RETURN_CUSTOMER"]) == ("Y", "N")
    assert (lead["HAS_PHONE"], lead["HAS_EMAIL"], lead["HAS_IMOL"]) == ("N", "N", "N")
    assert (lead["ASSIGNED_BY_ID"], lead["CREATED_BY_ID"], lead["MOVED_BY_ID"]) == ("1", "1", "1")
    assert lead["MOVED_TIME"] == lead["DATE_CREATE"] == lead["LAST_ACTIVITY_TIME"]
    # docs crm-lead-get.md example: an unset BIRTHDATE / DATE_CLOSED reads back as "", other unset fields as null.
    assert (lead["BIRTHDATE"], lead["DATE_CLOSED"], lead["COMPANY_TITLE"]) == ("", "", None)
    assert lead["ORIGINATOR_ID"] == "shop" and lead["NAME"] == "Ann"
    assert "CONTACT_IDS" not in lead and "PHONE" not in lead
    visible = [n for n in DOCS_FIELDS if n not in ("CONTACT_IDS", "PHONE", "EMAIL", "WEB", "IM", "LINK")]
    assert sorted(lead) == sorted(visible)


def test_update_delete_and_missing_ids(sandbox: LiveSandbox) -> None:
    lead_id = add_lead(sandbox, TITLE="Call back")
    assert ok(sandbox.call("crm.lead.update", {"id": lead_id, "fields": {"COMMENTS": "hot", "HAS_PHONE": "Y"}}))
    lead = get_lead(sandbox, lead_id)
    assert (lead["TITLE"], lead["COMMENTS"], lead["HAS_PHONE"]) == ("Call back", "hot", "N")  # read-only ignored
    not_found = {"error": "", "error_description": "Not found"}
    for method in ("crm.lead.get", "crm.lead.update", "crm.lead.delete"):
        missing = sandbox.call(method, {"id": lead_id + 100, "fields": {"TITLE": "x"}})
        assert (missing.status_code, missing.json()) == (400, not_found), method
        bad = sandbox.call(method, {"id": 0, "fields": {}})
        assert bad.json() == {"error": "", "error_description": "ID is not defined or invalid."}, method
    assert ok(sandbox.call("crm.lead.delete", {"id": lead_id})) is True
    assert sandbox.call("crm.lead.get", {"id": lead_id}).json() == not_found


def test_multi_fields_and_has_flags(sandbox: LiveSandbox) -> None:
    phone = [{"VALUE": "+15454777777", "VALUE_TYPE": "OTHER"}]
    im = [{"VALUE": "imol|livechat|1|67|21", "VALUE_TYPE": "OPENLINE"}]
    lead_id = add_lead(sandbox, PHONE=phone, IM=im)
    add_lead(sandbox, EMAIL=[{"VALUE": "a@example.com"}])
    lead = get_lead(sandbox, lead_id)
    assert (lead["HAS_PHONE"], lead["HAS_EMAIL"], lead["HAS_IMOL"]) == ("Y", "N", "Y")
    [entry] = lead["PHONE"]
    assert (entry["VALUE"], entry["VALUE_TYPE"], entry["TYPE_ID"]) == ("+15454777777", "OTHER", "PHONE")
    found = ok(sandbox.call("crm.lead.list", {"filter": {"PHONE": "+15454777777"}, "select": ["ID", "PHONE"]}))
    assert [row["ID"] for row in found] == [str(lead_id)] and found[0]["PHONE"] == lead["PHONE"]
    bad = sandbox.call("crm.lead.add", {"fields": {"EMAIL": [{"VALUE": "nope", "VALUE_TYPE": "WORK"}]}})
    assert bad.json() == {
        "error": "ERROR_CORE",
        "error_description": "The field `Work e-mail` contains an invalid address",
    }
    ok(sandbox.call("crm.lead.update", {"id": lead_id, "fields": {"PHONE": [{"ID": entry["ID"], "DELETE": "Y"}]}}))
    lead = get_lead(sandbox, lead_id)
    assert lead["HAS_PHONE"] == "N" and "PHONE" not in lead


def test_list_filters_by_originator_and_origin(sandbox: LiveSandbox) -> None:
    made = {key: add_lead(sandbox, ORIGINATOR_ID=key[0], ORIGIN_ID=key[1]) for key in
            [("shop", "1"), ("shop", "2"), ("crm", "1")]}  # fmt: skip
    query = {"filter": {"ORIGINATOR_ID": "shop", "ORIGIN_ID": "2"}, "select": ["ID", "ORIGINATOR_ID", "ORIGIN_ID"]}
    response = sandbox.call("crm.lead.list", query)
    assert ok(response) == [{"ID": str(made[("shop", "2")]), "ORIGINATOR_ID": "shop", "ORIGIN_ID": "2"}]
    assert response.json()["total"] == 1
    by_origin = ok(sandbox.call("crm.lead.list", {"filter": {"ORIGIN_ID": "1"}, "order": {"ID": "DESC"}}))
    assert [row["ID"] for row in by_origin] == [str(made[("crm", "1")]), str(made[("shop", "1")])]
    assert "CONTACT_IDS" not in by_origin[0] and "TITLE" in by_origin[0]


def test_user_fields_on_leads(sandbox: LiveSandbox) -> None:
    body = {"fields": {"FIELD_NAME": "SCORE", "USER_TYPE_ID": "integer", "LABEL": "Score"}}
    field_id = ok(sandbox.call("crm.lead.userfield.add", body))
    got = ok(sandbox.call("crm.lead.userfield.get", {"id": field_id}))
    assert (got["ENTITY_ID"], got["FIELD_NAME"]) == ("CRM_LEAD", "UF_CRM_SCORE")
    assert [f["FIELD_NAME"] for f in ok(sandbox.call("crm.lead.userfield.list"))] == ["UF_CRM_SCORE"]
    assert ok(sandbox.call("crm.deal.userfield.list")) == []
    deal_field = ok(sandbox.call("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "D", "USER_TYPE_ID": "string"}}))
    assert sandbox.call("crm.lead.userfield.get", {"id": deal_field}).json()["error_description"] == "Access denied."
    assert ok(sandbox.call("crm.lead.fields"))["UF_CRM_SCORE"]["isDynamic"] is True
    high, low = add_lead(sandbox, UF_CRM_SCORE="7"), add_lead(sandbox, UF_CRM_SCORE=3)
    assert get_lead(sandbox, high)["UF_CRM_SCORE"] == "7"
    found = ok(sandbox.call("crm.lead.list", {"filter": {">UF_CRM_SCORE": 5}, "select": ["ID", "UF_*"]}))
    assert found == [{"ID": str(high), "UF_CRM_SCORE": "7"}]
    assert [r["ID"] for r in ok(sandbox.call("crm.lead.list", {"filter": {"UF_CRM_SCORE": 3}}))] == [str(low)]


def test_product_rows_of_a_lead(sandbox: LiveSandbox) -> None:
    deal_id = ok(sandbox.call("crm.deal.add", {"fields": {"TITLE": "same id as the lead"}}))
    lead_id = add_lead(sandbox)
    assert lead_id == deal_id  # separate sequences: the rows below must not mix up the two owners
    ok(sandbox.call("crm.deal.productrows.set", {"id": deal_id, "rows": [{"PRODUCT_NAME": "Deal row", "PRICE": 1}]}))
    rows = [{"PRODUCT_NAME": "A", "PRICE": 10, "QUANTITY": 3}, {"PRICE": 5, "SORT": 30, "TAX_RATE": 25}]
    assert ok(sandbox.call("crm.lead.productrows.set", {"id": lead_id, "rows": rows})) is True
    got = ok(sandbox.call("crm.lead.productrows.get", {"id": lead_id}))
    assert [(r["PRODUCT_NAME"], r["OWNER_ID"], r["OWNER_TYPE"]) for r in got] == [
        ("A", str(lead_id), "L"), (f"[{got[1]['ID']}]", str(lead_id), "L")]  # fmt: skip
    assert got[1]["PRICE_EXCLUSIVE"] == 4 and got[1]["QUANTITY"] == 1
    lead = get_lead(sandbox, lead_id)
    assert lead["OPPORTUNITY"] == "35.00" and "TAX_VALUE" not in lead
    deal_rows = ok(sandbox.call("crm.deal.productrows.get", {"id": deal_id}))
    assert [r["PRODUCT_NAME"] for r in deal_rows] == ["Deal row"]
    ok(sandbox.call("crm.lead.productrows.set", {"id": lead_id, "rows": []}))
    assert ok(sandbox.call("crm.lead.productrows.get", {"id": lead_id})) == []
    assert get_lead(sandbox, lead_id)["OPPORTUNITY"] == "0.00"

    manual = add_lead(sandbox, OPPORTUNITY=7, IS_MANUAL_OPPORTUNITY="Y")
    ok(sandbox.call("crm.lead.productrows.set", {"id": manual, "rows": [{"PRICE": 100}]}))
    assert get_lead(sandbox, manual)["OPPORTUNITY"] == "7.00"
    errors: dict[str, tuple[dict[str, Any], str]] = {
        "crm.lead.productrows.get": ({"id": 999}, "Not found"),
        "crm.lead.productrows.set": ({"id": manual, "rows": "x"}, "The parameter rows must be array."),
    }
    for method, (params, text) in errors.items():
        assert sandbox.call(method, params).json() == {"error": "", "error_description": text}
    bad_id = sandbox.call("crm.lead.productrows.get", {})
    assert bad_id.json()["error_description"] == "The parameter id is invalid or not defined."


def test_lead_stages_and_a_status_change(sandbox: LiveSandbox) -> None:
    stages = ok(sandbox.call("crm.status.list", {"filter": {"ENTITY_ID": "STATUS"}}))
    assert [(s["STATUS_ID"], s["SEMANTICS"], s["EXTRA"]["SEMANTICS"]) for s in stages] == [
        ("NEW", None, "process"), ("IN_PROCESS", None, "process"), ("PROCESSED", None, "process"),
        ("CONVERTED", "S", "success"), ("JUNK", "F", "failure")]  # fmt: skip
    assert (stages[0]["NAME"], stages[0]["SORT"], stages[0]["SYSTEM"]) == ("Not processed", "10", "Y")
    lead_id = add_lead(sandbox, STATUS_ID="IN_PROCESS")
    assert get_lead(sandbox, lead_id)["STATUS_ID"] == "IN_PROCESS"
    ok(sandbox.call("crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "CONVERTED"}}))
    lead = get_lead(sandbox, lead_id)
    assert (lead["STATUS_ID"], lead["STATUS_SEMANTIC_ID"]) == ("CONVERTED", "S") and lead["DATE_CLOSED"] != ""
    ok(sandbox.call("crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "NO_SUCH_STAGE"}}))
    assert get_lead(sandbox, lead_id)["STATUS_ID"] == "CONVERTED"  # an unknown stage is not taken
    ok(sandbox.call("crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "JUNK"}}))
    assert get_lead(sandbox, lead_id)["STATUS_SEMANTIC_ID"] == "F"
    ok(sandbox.call("crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "PROCESSED"}}))
    lead = get_lead(sandbox, lead_id)
    assert (lead["STATUS_SEMANTIC_ID"], lead["DATE_CLOSED"]) == ("P", "")
    assert get_lead(sandbox, add_lead(sandbox, STATUS_ID="NO_SUCH_STAGE"))["STATUS_ID"] == "NEW"
    processed = next(s for s in stages if s["STATUS_ID"] == "PROCESSED")
    busy = sandbox.call("crm.status.delete", {"id": processed["ID"]})
    assert busy.json() == {"error": "", "error_description": "There are active items in this status."}
    added = ok(sandbox.call("crm.status.add", {"fields": {"ENTITY_ID": "STATUS", "STATUS_ID": "CALLED", "NAME": "C"}}))
    row = next(
        s for s in ok(sandbox.call("crm.status.list", {"filter": {"ENTITY_ID": "STATUS"}})) if s["ID"] == str(added)
    )
    assert (row["SEMANTICS"], row["EXTRA"]["SEMANTICS"]) == (None, "process")
    assert get_lead(sandbox, add_lead(sandbox, STATUS_ID="CALLED"))["STATUS_SEMANTIC_ID"] == "P"


def test_contacts_and_returning_customer(sandbox: LiveSandbox) -> None:
    first, second = (ok(sandbox.call("crm.contact.add", {"fields": {"NAME": n}})) for n in ("Ann", "Bob"))
    lead_id = add_lead(sandbox, CONTACT_IDS=[second, first], IS_RETURN_CUSTOMER="N")
    lead = get_lead(sandbox, lead_id)
    assert (lead["CONTACT_ID"], lead["IS_RETURN_CUSTOMER"]) == (str(second), "Y")
    plain = add_lead(sandbox)
    ok(
        sandbox.call(
            "crm.lead.update",
            {"id": plain, "fields": {"COMPANY_ID": ok(sandbox.call("crm.company.add", {"fields": {"TITLE": "Co"}}))}},
        )
    )
    assert get_lead(sandbox, plain)["IS_RETURN_CUSTOMER"] == "Y"
    assert get_lead(sandbox, add_lead(sandbox, IS_RETURN_CUSTOMER="Y"))["IS_RETURN_CUSTOMER"] == "N"


def test_worlds_saved_before_leads_load_and_lead_rows_round_trip() -> None:
    world = World()
    seed_world(world)
    world.rows_of("LEAD")[3] = [{"ID": "7", "OWNER_TYPE": "L"}]
    again = World.from_json(json.loads(json.dumps(world.to_json())))
    assert again.product_rows == {"LEAD": {3: [{"ID": "7", "OWNER_TYPE": "L"}]}}
    old = world.to_json()
    old["statuses"] = [row for row in old["statuses"] if row["ENTITY_ID"] != "STATUS"]
    old["product_rows"] = {"5": [{"ID": "1"}]}  # the format of the deal-only days: {deal_id: rows}
    loaded = World.from_json(json.loads(json.dumps(old)))
    seed_world(loaded)
    assert loaded.product_rows == {"DEAL": {5: [{"ID": "1"}]}}
    codes = [row["STATUS_ID"] for row in loaded.statuses if row["ENTITY_ID"] == "STATUS"]
    assert codes == ["NEW", "IN_PROCESS", "PROCESSED", "CONVERTED", "JUNK"]
    ids = [row["ID"] for row in loaded.statuses]
    assert len(ids) == len(set(ids))
