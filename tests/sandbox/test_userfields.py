"""User fields of deals, contacts and companies: crm.*.userfield.* and the UF_CRM_* values they create
(docs crm-{deal,contact,company}-userfield-*.md, crm-*-fields.md; REFERENCE 6.4)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.conftest import LiveSandbox


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


def add_field(sandbox: LiveSandbox, entity: str, code: str, user_type: str, **fields: Any) -> int:
    body = {"fields": {"FIELD_NAME": code, "USER_TYPE_ID": user_type, "LABEL": code.title(), **fields}}
    field_id: int = ok(sandbox.call(f"crm.{entity}.userfield.add", body))
    return field_id


def test_add_names_the_field_and_validates(sandbox: LiveSandbox) -> None:
    field_id = add_field(sandbox, "deal", "manager_note", "string")
    got = ok(sandbox.call("crm.deal.userfield.get", {"id": field_id}))
    assert (got["ID"], got["ENTITY_ID"], got["FIELD_NAME"]) == (str(field_id), "CRM_DEAL", "UF_CRM_MANAGER_NOTE")
    assert (got["SORT"], got["MULTIPLE"], got["MANDATORY"], got["EDIT_IN_LIST"]) == ("100", "N", "N", "Y")
    assert got["EDIT_FORM_LABEL"]["en"] == "Manager_Note" and got["EDIT_FORM_LABEL"]["de"] == "Manager_Note"
    assert got["SETTINGS"]["DEFAULT_VALUE"] == "" and got["SETTINGS"]["ROWS"] == 1
    assert add_field(sandbox, "deal", "UF_OTHER", "integer") > field_id
    names = [f["FIELD_NAME"] for f in ok(sandbox.call("crm.deal.userfield.list"))]
    assert names == ["UF_CRM_MANAGER_NOTE", "UF_CRM_OTHER"]
    cases = {
        ("", "string"): ("", "The 'FIELD_NAME' field is not found."),
        ("X", ""): ("", "The 'USER_TYPE_ID' field is not found."),
        ("X" * 44, "string"): ("ERROR_CORE", "Field name is too long (more than 50 characters)."),
        ("BAD-NAME", "string"): (
            "ERROR_CORE", "Field name contains invalid characters. Allowed characters are: A-Z, 0-9 and _."),
        ("X", "nonsense"): ("ERROR_CORE", "Incorrect custom type specified."),
    }  # fmt: skip
    for (code, user_type), (error, text) in cases.items():
        body = {"fields": {"FIELD_NAME": code, "USER_TYPE_ID": user_type}}
        response = sandbox.call("crm.deal.userfield.add", body)
        assert response.status_code == 400 and response.json() == {"error": error, "error_description": text}
    duplicate = [{"VALUE": "a", "XML_ID": "same"}, {"VALUE": "b", "XML_ID": "same"}]
    refused = sandbox.call("crm.deal.userfield.add", {"fields": {"FIELD_NAME": "E", "USER_TYPE_ID": "enumeration",
                                                                 "LIST": duplicate}})  # fmt: skip
    assert refused.json()["error_description"] == "List item with value XML_ID=same already exists."


def test_fields_appear_in_entity_fields(sandbox: LiveSandbox) -> None:
    add_field(sandbox, "company", "INN", "string", LABEL="Tax number")
    items = [{"VALUE": "Gold", "SORT": 20}, {"VALUE": "Silver", "SORT": 10, "DEF": "Y"}]
    add_field(sandbox, "company", "TIER", "enumeration", LABEL="Tier", LIST=items)
    fields = ok(sandbox.call("crm.company.fields"))
    assert fields["UF_CRM_INN"] == {
        "type": "string", "isRequired": False, "isReadOnly": False, "isImmutable": False, "isMultiple": False,
        "isDynamic": True, "title": "UF_CRM_INN", "listLabel": "Tax number", "formLabel": "Tax number",
        "filterLabel": "Tax number",
        "settings": {"SIZE": 20, "ROWS": 1, "REGEXP": "", "MIN_LENGTH": 0, "MAX_LENGTH": 0, "DEFAULT_VALUE": ""},
    }  # fmt: skip
    assert [i["VALUE"] for i in fields["UF_CRM_TIER"]["items"]] == ["Silver", "Gold"]
    assert fields["TITLE"]["isDynamic"] is False
    assert "UF_CRM_INN" not in ok(sandbox.call("crm.deal.fields"))


def test_values_are_coerced_stored_and_read_back(sandbox: LiveSandbox) -> None:
    add_field(sandbox, "deal", "COUNT", "integer")
    add_field(sandbox, "deal", "RATE", "double", SETTINGS={"PRECISION": 1})
    add_field(sandbox, "deal", "VIP", "boolean")
    add_field(sandbox, "deal", "DUE", "date")
    add_field(sandbox, "deal", "AT", "datetime")
    add_field(sandbox, "deal", "BUDGET", "money")
    add_field(sandbox, "deal", "TAGS", "string", MULTIPLE="Y")
    level = add_field(sandbox, "deal", "LEVEL", "enumeration", LIST=[{"VALUE": "Low"}, {"VALUE": "High"}])
    high = next(i for i in ok(sandbox.call("crm.deal.userfield.get", {"id": level}))["LIST"] if i["VALUE"] == "High")
    deal_id = ok(sandbox.call("crm.deal.add", {"fields": {
        "UF_CRM_COUNT": "12abc", "UF_CRM_RATE": "2,46", "UF_CRM_VIP": "Y", "UF_CRM_DUE": "2024-08-30",
        "UF_CRM_AT": "2024-08-30T10:00:00+00:00", "UF_CRM_BUDGET": "1500|EUR", "UF_CRM_TAGS": ["a", "", "b"],
        "UF_CRM_LEVEL": high["ID"]}}))  # fmt: skip
    deal = ok(sandbox.call("crm.deal.get", {"id": deal_id}))
    assert (deal["UF_CRM_COUNT"], deal["UF_CRM_RATE"], deal["UF_CRM_VIP"]) == ("12", "2.5", "1")
    assert deal["UF_CRM_DUE"].startswith("2024-08-30T") and deal["UF_CRM_AT"] == "2024-08-30T13:00:00+03:00"
    assert (deal["UF_CRM_BUDGET"], deal["UF_CRM_TAGS"], deal["UF_CRM_LEVEL"]) == ("1500|EUR", ["a", "b"], high["ID"])
    # An unparseable date is dropped: the field keeps its value (CCrmRestService::internalizeFields).
    ok(sandbox.call("crm.deal.update", {"id": deal_id, "fields": {"UF_CRM_DUE": "not a date", "UF_CRM_VIP": "N",
                                                                  "UF_CRM_TAGS": []}}))  # fmt: skip
    deal = ok(sandbox.call("crm.deal.get", {"id": deal_id}))
    assert deal["UF_CRM_DUE"].startswith("2024-08-30T") and deal["UF_CRM_VIP"] == "0"
    assert deal["UF_CRM_TAGS"] is False  # an empty multiple field [inferred]
    empty = ok(sandbox.call("crm.deal.get", {"id": ok(sandbox.call("crm.deal.add", {"fields": {}}))}))
    assert (empty["UF_CRM_COUNT"], empty["UF_CRM_DUE"], empty["UF_CRM_VIP"]) == (None, "", "0")


def test_defaults_filters_and_select(sandbox: LiveSandbox) -> None:
    add_field(sandbox, "contact", "SOURCE_CODE", "string", SETTINGS={"DEFAULT_VALUE": "web"})
    add_field(sandbox, "contact", "SCORE", "integer")
    for score in (5, 50, 500):
        ok(sandbox.call("crm.contact.add", {"fields": {"NAME": f"C{score}", "UF_CRM_SCORE": score}}))
    found = ok(sandbox.call("crm.contact.list", {"filter": {">=UF_CRM_SCORE": 50}, "select": ["NAME", "UF_*"]}))
    assert [(c["NAME"], c["UF_CRM_SCORE"], c["UF_CRM_SOURCE_CODE"]) for c in found] == [
        ("C50", "50", "web"), ("C500", "500", "web")]  # fmt: skip
    assert list(found[0]) == ["ID", "NAME", "UF_CRM_SOURCE_CODE", "UF_CRM_SCORE"]
    plain = ok(sandbox.call("crm.contact.list", {"select": ["*"]}))[0]
    assert "UF_CRM_SCORE" not in plain  # docs: "*" leaves user fields out


@pytest.mark.parametrize("entity", ["deal", "contact", "company"])
def test_list_update_delete(sandbox: LiveSandbox, entity: str) -> None:
    field_id = add_field(sandbox, entity, "NOTE", "string", LABEL={"en": "Note", "de": "Notiz"})
    other = "contact" if entity != "contact" else "deal"
    denied = sandbox.call(f"crm.{other}.userfield.get", {"id": field_id})
    assert denied.status_code == 400 and denied.json() == {"error": "", "error_description": "Access denied."}
    listed = ok(sandbox.call(f"crm.{entity}.userfield.list", {"filter": {"LANG": "de"}}))
    assert (listed[0]["EDIT_FORM_LABEL"], listed[0]["LIST_COLUMN_LABEL"]) == ("Notiz", "Notiz")
    assert "EDIT_FORM_LABEL" not in ok(sandbox.call(f"crm.{entity}.userfield.list"))[0]
    fields = {"EDIT_FORM_LABEL": {"en": "Remark"}, "SORT": 300, "MANDATORY": "Y"}
    assert ok(sandbox.call(f"crm.{entity}.userfield.update", {"id": field_id, "fields": fields})) is True
    got = ok(sandbox.call(f"crm.{entity}.userfield.get", {"id": field_id}))
    assert (got["EDIT_FORM_LABEL"]["en"], got["EDIT_FORM_LABEL"]["de"], got["SORT"]) == ("Remark", "Notiz", "300")
    assert ok(sandbox.call(f"crm.{entity}.fields"))["UF_CRM_NOTE"]["isRequired"] is True
    assert ok(sandbox.call(f"crm.{entity}.userfield.delete", {"id": field_id})) is True
    missing = sandbox.call(f"crm.{entity}.userfield.get", {"id": field_id})
    assert missing.json() == {
        "error": "ERROR_NOT_FOUND",
        "error_description": f"The entity with ID '{field_id}' is not found",
    }
    assert "UF_CRM_NOTE" not in ok(sandbox.call(f"crm.{entity}.fields"))


def test_enumeration_items_update(sandbox: LiveSandbox) -> None:
    field_id = add_field(sandbox, "deal", "STATE", "enumeration", LIST=[{"VALUE": "One"}, {"VALUE": "Two"}])
    one, two = ok(sandbox.call("crm.deal.userfield.get", {"id": field_id}))["LIST"]
    change = [{"ID": one["ID"], "VALUE": "Uno"}, {"ID": two["ID"], "DEL": "Y"}, {"VALUE": "Tres", "SORT": 30}]
    ok(sandbox.call("crm.deal.userfield.update", {"id": field_id, "fields": {"LIST": change}}))
    items = ok(sandbox.call("crm.deal.userfield.get", {"id": field_id}))["LIST"]
    assert [(i["VALUE"], i["ID"] == one["ID"]) for i in items] == [("Uno", True), ("Tres", False)]


def test_only_administrators_manage_user_fields(sandbox: LiveSandbox) -> None:
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 2, "scopes": ["crm"]})
    body = {"fields": {"FIELD_NAME": "X", "USER_TYPE_ID": "string"}}
    refused = sandbox.http.post(hook["url"] + "crm.deal.userfield.add", json=body)
    assert refused.status_code == 403 and refused.json()["error"] == "ACCESS_DENIED"
