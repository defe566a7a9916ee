"""Legacy crm.contact/company/deal methods over real HTTP, checked against the docs' envelopes."""

from __future__ import annotations

from typing import Any

from tests.sandbox.conftest import LiveSandbox


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


def err(response: Any, status: int, code: str, text: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": code, "error_description": text}


def test_contact_add_get_strings_and_multifields(sandbox: LiveSandbox) -> None:
    new_id = ok(sandbox.call("crm.contact.add", {"fields": {
        "NAME": "Ann", "LAST_NAME": "Lee", "BIRTHDATE": "11.11.2001", "UNKNOWN_FIELD": "x", "UF_CRM_1": "u",
        "COMPANY_ID": 9, "ORIGINATOR_ID": "my-shop", "ORIGIN_ID": "c-981",
        "PHONE": [{"VALUE": "+15551234567", "VALUE_TYPE": "WORK"}]}}))  # fmt: skip
    assert isinstance(new_id, int)
    contact = ok(sandbox.call("crm.contact.get", {"id": new_id}))
    assert contact["ID"] == str(new_id) and contact["COMPANY_ID"] == "9" and contact["ASSIGNED_BY_ID"] == "1"
    assert contact["ORIGINATOR_ID"] == "my-shop" and contact["UF_CRM_1"] == "u" and "UNKNOWN_FIELD" not in contact
    assert contact["HAS_PHONE"] == "Y" and contact["HAS_EMAIL"] == "N" and contact["OPENED"] == "Y"
    assert contact["BIRTHDATE"].startswith("2001-11-1")
    assert "EMAIL" not in contact  # empty multi-fields are omitted
    phone = contact["PHONE"][0]
    assert set(phone) == {"ID", "VALUE_TYPE", "VALUE", "TYPE_ID"} and phone["TYPE_ID"] == "PHONE"
    assert isinstance(phone["ID"], str) and phone["VALUE"] == "+15551234567"


def test_form_encoded_php_brackets(sandbox: LiveSandbox) -> None:
    body = "fields[NAME]=Bob&fields[PHONE][0][VALUE]=%2B100&fields[PHONE][0][VALUE_TYPE]=MOBILE&params[X]=1"
    hdr = {"Content-Type": "application/x-www-form-urlencoded"}
    new_id = ok(sandbox.http.post(f"{sandbox.webhook_url}crm.contact.add", content=body, headers=hdr))
    got = ok(sandbox.http.get(f"{sandbox.webhook_url}crm.contact.get", params={"ID": str(new_id)}))
    assert got["NAME"] == "Bob" and got["PHONE"][0]["VALUE"] == "+100" and got["PHONE"][0]["VALUE_TYPE"] == "MOBILE"


def test_multifield_update_rules(sandbox: LiveSandbox) -> None:
    phones = [{"VALUE": v, "VALUE_TYPE": "WORK"} for v in ("111", "222", "333", "444")]
    cid = ok(sandbox.call("crm.contact.add", {"fields": {"PHONE": phones}}))
    ids = [p["ID"] for p in ok(sandbox.call("crm.contact.get", {"id": cid}))["PHONE"]]
    change = [{"ID": ids[0], "DELETE": "Y"}, {"ID": ids[1], "VALUE": ""}, {"ID": ids[2], "VALUE": "999",
              "VALUE_TYPE": "MOBILE"}, {"VALUE": "555", "VALUE_TYPE": "HOME"}]  # fmt: skip
    assert ok(sandbox.call("crm.contact.update", {"id": cid, "fields": {"PHONE": change}})) is True
    after = ok(sandbox.call("crm.contact.get", {"id": cid}))["PHONE"]
    assert [(p["VALUE"], p["VALUE_TYPE"]) for p in after] == [("999", "MOBILE"), ("444", "WORK"), ("555", "HOME")]
    assert after[0]["ID"] == ids[2] and int(after[2]["ID"]) > int(ids[3])


def test_invalid_email_is_error_core_and_changes_nothing(sandbox: LiveSandbox) -> None:
    bad = {"fields": {"EMAIL": [{"VALUE": "not-an-email", "VALUE_TYPE": "WORK"}]}}
    err(sandbox.call("crm.contact.add", bad), 400, "ERROR_CORE", "The field `Work e-mail` contains an invalid address")
    cid = ok(sandbox.call("crm.contact.add", {"fields": {"NAME": "A"}}))
    assert cid == 1  # the rejected add took no ID
    err(sandbox.call("crm.contact.update", {"id": cid, **bad}), 400, "ERROR_CORE",
        "The field `Work e-mail` contains an invalid address")  # fmt: skip


def test_errors_per_entity(sandbox: LiveSandbox) -> None:
    err(sandbox.call("crm.contact.add", {"fields": "x"}), 400, "", "Parameter 'fields' must be array.")
    err(sandbox.call("crm.contact.get", {"id": "abc"}), 400, "", "ID is not defined or invalid.")
    err(sandbox.call("crm.contact.get", {"id": 0}), 400, "", "ID is not defined or invalid.")
    err(sandbox.call("crm.contact.get", {"id": 77}), 400, "", "Not found")
    err(sandbox.call("crm.contact.update", {"id": 77, "fields": {}}), 400, "", "Contact is not found")
    err(sandbox.call("crm.contact.delete", {"id": 77}), 400, "ERROR_CORE", "Element not found")
    err(sandbox.call("crm.company.delete", {"id": 77}), 400, "", "Company is not found")
    err(sandbox.call("crm.deal.update", {"id": 77, "fields": {}}), 400, "", "Not found")
    err(sandbox.call("crm.deal.delete", {"id": 77}), 400, "", "Not found")


def test_delete_then_get(sandbox: LiveSandbox) -> None:
    cid = ok(sandbox.call("crm.company.add", {"fields": {"TITLE": "Acme"}}))
    assert ok(sandbox.call("crm.company.get", {"id": cid}))["TITLE"] == "Acme"
    assert ok(sandbox.call("crm.company.delete", {"id": cid})) is True
    err(sandbox.call("crm.company.get", {"id": cid}), 400, "", "Not found")


def test_deal_defaults_category_and_stage(sandbox: LiveSandbox) -> None:
    did = ok(sandbox.call("crm.deal.add", {"fields": {"OPPORTUNITY": 1500.5, "CONTACT_IDS": [4, 5]}}))
    deal = ok(sandbox.call("crm.deal.get", {"id": did}))
    assert deal["TITLE"] == f"Deal #{did}" and deal["OPPORTUNITY"] == "1500.50" and deal["CATEGORY_ID"] == "0"
    assert deal["STAGE_ID"] == "NEW" and deal["STAGE_SEMANTIC_ID"] == "P" and deal["CONTACT_ID"] == "4"
    assert deal["CLOSED"] == "N" and "CONTACT_IDS" not in deal
    assert deal["BEGINDATE"] < deal["CLOSEDATE"]
    funnel = ok(sandbox.call("crm.category.add", {"entityTypeId": 2, "fields": {"name": "Partners"}}))["category"]
    cid = funnel["id"]
    d2 = ok(
        sandbox.call("crm.deal.add", {"fields": {"CATEGORY_ID": str(cid), "TITLE": "T", "BEGINDATE": "2024-08-30"}})
    )
    deal2 = ok(sandbox.call("crm.deal.get", {"id": d2}))
    assert deal2["STAGE_ID"] == f"C{cid}:NEW" and deal2["BEGINDATE"].startswith("2024-08-30T")
    ok(sandbox.call("crm.deal.update", {"id": d2, "fields": {"CATEGORY_ID": 0, "STAGE_ID": f"C{cid}:WON"}}))
    deal2 = ok(sandbox.call("crm.deal.get", {"id": d2}))
    assert deal2["CATEGORY_ID"] == str(cid) and deal2["STAGE_SEMANTIC_ID"] == "S" and deal2["CLOSED"] == "Y"


def test_crm_changed_listener(sandbox: LiveSandbox) -> None:
    seen: list[tuple[str, str, int, Any, Any]] = []

    def listener(_sb: Any, entity: str, action: str, rid: int, before: Any, after: Any) -> None:
        seen.append((entity, action, rid, before, after))

    sandbox.portal.crm_listeners.append(listener)
    try:
        did = ok(sandbox.call("crm.deal.add", {"fields": {"TITLE": "x"}}))
        ok(sandbox.call("crm.deal.update", {"id": did, "fields": {"STAGE_ID": "PREPARATION"}}))
        ok(sandbox.call("crm.deal.delete", {"id": did}))
    finally:
        sandbox.portal.crm_listeners.remove(listener)
    assert [(e, a, i) for e, a, i, _, _ in seen] == [("DEAL", "ADD", did), ("DEAL", "UPDATE", did),
                                                     ("DEAL", "DELETE", did)]  # fmt: skip
    assert seen[0][3] is None and seen[2][4] is None
    assert seen[1][3]["STAGE_ID"] == "NEW" and seen[1][4]["STAGE_ID"] == "PREPARATION"


def test_fields_shape(sandbox: LiveSandbox) -> None:
    fields = ok(sandbox.call("crm.deal.fields"))
    assert fields["STAGE_ID"] == {"type": "crm_status", "isRequired": False, "isReadOnly": False,
                                  "isImmutable": False, "isMultiple": False, "isDynamic": False,
                                  "statusType": "DEAL_STAGE", "title": "Deal Stage"}  # fmt: skip
    assert fields["CATEGORY_ID"]["isImmutable"] is True and fields["ID"]["isReadOnly"] is True
    contact = ok(sandbox.call("crm.contact.fields"))
    assert contact["PHONE"]["type"] == "crm_multifield" and contact["PHONE"]["isMultiple"] is True
    assert ok(sandbox.call("crm.company.fields"))["TITLE"]["isRequired"] is True
