"""Matching people and companies across portals: user.get by e-mail (docs user-get.md) and company requisites with
their tax number (docs crm/requisites/universal/*.md, presets/crm-requisite-preset-list.md)."""

from __future__ import annotations

from typing import Any

from tests.sandbox.conftest import LiveSandbox


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


def user_ids(sandbox: LiveSandbox, **params: Any) -> list[str]:
    return [u["ID"] for u in ok(sandbox.call("user.get", params))]


def test_user_get_filters(sandbox: LiveSandbox) -> None:
    ann = sandbox.control(
        "POST", "/_sandbox/users", {"name": "Ann", "last_name": "Lee", "email": "Ann.Lee@example.com"}
    )
    gone = sandbox.control("POST", "/_sandbox/users", {"name": "Gone", "email": "gone@example.com", "active": False})
    assert user_ids(sandbox, filter={"EMAIL": "ann.lee@example.com"}) == [str(ann["id"])]  # case-insensitive
    assert user_ids(sandbox, FILTER={"EMAIL": "nobody@example.com"}) == []
    assert user_ids(sandbox, filter={"%EMAIL": "@example.com"}) == [str(ann["id"]), str(gone["id"])]
    assert user_ids(sandbox, filter={"EMAIL": "gone@example.com", "ACTIVE": True}) == []
    assert user_ids(sandbox, filter={"ACTIVE": "Y"}) == ["1", "2", str(ann["id"])]
    assert user_ids(sandbox, filter={"ID": [2, ann["id"]]}) == ["2", str(ann["id"])]
    assert user_ids(sandbox, filter={">ID": 1, "<ID": 100}) == ["2"]
    assert user_ids(sandbox, email="admin@sandbox.local") == ["1"]  # filter fields at the top level too
    assert user_ids(sandbox, sort="ID", order="DESC")[:2] == [str(gone["id"]), str(ann["id"])]
    [found] = ok(sandbox.call("user.get", {"filter": {"EMAIL": "Ann.Lee@example.com"}}))
    assert (found["NAME"], found["LAST_NAME"], found["ACTIVE"], found["EMAIL"]) == (
        "Ann", "Lee", True, "Ann.Lee@example.com")  # fmt: skip


def add_company(sandbox: LiveSandbox, title: str) -> int:
    company_id: int = ok(sandbox.call("crm.company.add", {"fields": {"TITLE": title}}))
    return company_id


def add_requisite(sandbox: LiveSandbox, company_id: int, inn: str, **fields: Any) -> int:
    body = {"ENTITY_TYPE_ID": 4, "ENTITY_ID": company_id, "PRESET_ID": 1, "NAME": "Organization", "RQ_INN": inn}
    requisite_id: int = ok(sandbox.call("crm.requisite.add", {"fields": {**body, **fields}}))
    return requisite_id


def test_company_found_by_tax_number(sandbox: LiveSandbox) -> None:
    acme, other = add_company(sandbox, "Acme"), add_company(sandbox, "Other")
    requisite_id = add_requisite(sandbox, acme, "7707083893", RQ_KPP="770701001", RQ_COMPANY_NAME="ACME LLC")
    add_requisite(sandbox, other, "5003052454")
    found = sandbox.call("crm.requisite.list", {"filter": {"RQ_INN": "7707083893", "ENTITY_TYPE_ID": 4},
                                                "select": ["ENTITY_ID", "RQ_INN"]}).json()  # fmt: skip
    assert found["result"] == [{"ENTITY_ID": str(acme), "RQ_INN": "7707083893"}] and found["total"] == 1
    got = ok(sandbox.call("crm.requisite.get", {"id": requisite_id}))
    assert (got["ID"], got["ENTITY_TYPE_ID"], got["ENTITY_ID"], got["PRESET_ID"]) == (
        str(requisite_id), "4", str(acme), "1")  # fmt: skip
    assert (got["RQ_KPP"], got["RQ_OGRN"], got["ACTIVE"], got["SORT"], got["DATE_MODIFY"]) == (
        "770701001", None, "Y", "500", "")  # fmt: skip
    every = ok(sandbox.call("crm.requisite.list", {"filter": {"@ENTITY_ID": [acme, other]}, "order": {"ID": "DESC"}}))
    assert [r["ENTITY_ID"] for r in every] == [str(other), str(acme)] and "RQ_INN" in every[0]
    assert ok(sandbox.call("crm.requisite.update", {"id": requisite_id, "fields": {"RQ_INN": "1", "ENTITY_ID": 99}}))
    updated = ok(sandbox.call("crm.requisite.get", {"id": requisite_id}))
    assert (updated["RQ_INN"], updated["ENTITY_ID"], updated["MODIFY_BY_ID"]) == ("1", str(acme), "1")
    assert updated["DATE_MODIFY"] != ""
    presets = sandbox.call("crm.requisite.preset.list").json()
    assert presets["result"][0] == {"ID": "1", "NAME": "Organization"} and presets["total"] == 4
    assert ok(sandbox.call("crm.requisite.fields"))["RQ_INN"]["type"] == "string"


def test_requisite_errors_and_cascade(sandbox: LiveSandbox) -> None:
    company = add_company(sandbox, "Acme")
    base = {"ENTITY_TYPE_ID": 4, "ENTITY_ID": company, "PRESET_ID": 1, "NAME": "Org"}
    cases = {
        "ENTITY_TYPE_ID": (2, "ENTITY_TYPE_ID is not defined or invalid."),
        "ENTITY_ID": (0, "ENTITY_ID is not defined or invalid."),
        "PRESET_ID": (99, "PRESET_ID is not defined or invalid."),
    }
    for name, (value, text) in cases.items():
        response = sandbox.call("crm.requisite.add", {"fields": {**base, name: value}})
        assert response.status_code == 400 and response.json() == {"error": "", "error_description": text}
    missing = sandbox.call("crm.requisite.add", {"fields": {**base, "ENTITY_ID": 999}})
    assert missing.json() == {"error": "", "error_description": "Entity not found."}
    contact = ok(sandbox.call("crm.contact.add", {"fields": {"NAME": "Ann"}}))
    person = ok(sandbox.call("crm.requisite.add", {"fields": {**base, "ENTITY_TYPE_ID": 3, "ENTITY_ID": contact,
                                                              "PRESET_ID": 3}}))  # fmt: skip
    requisite_id = add_requisite(sandbox, company, "123")
    ok(sandbox.call("crm.company.delete", {"id": company}))
    gone = sandbox.call("crm.requisite.get", {"id": requisite_id})
    assert gone.json() == {"error": "", "error_description": f"The Requisite with ID '{requisite_id}' is not found"}
    assert ok(sandbox.call("crm.requisite.get", {"id": person}))["ENTITY_TYPE_ID"] == "3"
    assert ok(sandbox.call("crm.requisite.delete", {"id": person})) is True
    assert sandbox.call("crm.requisite.list").json()["total"] == 0
