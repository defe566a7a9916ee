"""Smart processes: crm.type.*, their default funnel and stages, crm.category.* and crm.status.* on them (docs
api-reference/crm/universal/user-defined-object-types, universal/category, tutorials how-to-add-category-to-spa.md and
how-to-get-stages-with-semantics.md)."""

from __future__ import annotations

from typing import Any

from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import error, ok

FLAGS = [
    "isCategoriesEnabled", "isStagesEnabled", "isBeginCloseDatesEnabled", "isClientEnabled", "isUseInUserfieldEnabled",
    "isLinkWithProductsEnabled", "isMycompanyEnabled", "isDocumentsEnabled", "isSourceEnabled", "isObserversEnabled",
    "isRecyclebinEnabled", "isAutomationEnabled", "isBizProcEnabled", "isSetOpenPermissions", "isPaymentsEnabled",
    "isCountersEnabled",
]  # fmt: skip


def add_type(sandbox: LiveSandbox, title: str = "Orders", **fields: Any) -> dict[str, Any]:
    spa: dict[str, Any] = ok(sandbox.call("crm.type.add", {"fields": {"title": title, **fields}}))["type"]
    return spa


def stages(sandbox: LiveSandbox, entity_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = ok(sandbox.call("crm.status.list", {"filter": {"ENTITY_ID": entity_id}}))
    return rows


def test_type_add_answers_the_documented_type_object(sandbox: LiveSandbox) -> None:
    spa = add_type(sandbox, isCategoriesEnabled="Y", isStagesEnabled="Y", isClientEnabled="Y")
    assert list(spa) == [
        "id", "title", "code", "createdBy", "entityTypeId", "customSectionId", *FLAGS, "createdTime", "updatedTime",
        "updatedBy", "relations", "linkedUserFields", "customSections",
    ]  # fmt: skip
    assert (spa["id"], spa["entityTypeId"], spa["title"], spa["createdBy"], spa["code"]) == (1, 128, "Orders", 1, "")
    defaults = {flag: spa[flag] for flag in FLAGS}
    assert defaults == {
        **dict.fromkeys(FLAGS, "N"), "isCategoriesEnabled": "Y", "isStagesEnabled": "Y", "isClientEnabled": "Y",
        "isSetOpenPermissions": "Y",
    }  # fmt: skip
    assert spa["createdTime"].endswith("+03:00") and spa["createdTime"] == spa["updatedTime"]
    # isClientEnabled makes contacts and companies predefined parents (docs crm-type-add.md answer).
    assert spa["relations"] == {"parent": [
        {"entityTypeId": 3, "isChildrenListEnabled": "Y", "isPredefined": "Y"},
        {"entityTypeId": 4, "isChildrenListEnabled": "Y", "isPredefined": "Y"}], "child": []}  # fmt: skip
    assert spa["linkedUserFields"] == {
        "CALENDAR_EVENT|UF_CRM_CAL_EVENT": "N",
        "TASKS_TASK|UF_CRM_TASK": "N",
        "TASKS_TASK_TEMPLATE|UF_CRM_TASK": "N",
    }
    second = add_type(sandbox, "Returns")
    assert (second["id"], second["entityTypeId"]) == (2, 129)  # the first free entityTypeId from 128


def test_entity_type_id_ranges(sandbox: LiveSandbox) -> None:
    assert add_type(sandbox, entityTypeId=1030)["entityTypeId"] == 1030
    assert add_type(sandbox, entityTypeId="191")["entityTypeId"] == 191
    out_of_range = {"error": "INVALID_ARG_VALUE", "error_description": "entityTypeId is out of allowed range"}
    for bad in (1031, 127, 192, 500, 1030):  # odd, below, the suspended range, between the ranges, taken
        assert error(sandbox.call("crm.type.add", {"fields": {"title": "x", "entityTypeId": bad}})) == out_of_range
    assert error(sandbox.call("crm.type.add", {})) == {
        "error": 100, "error_description": "Could not find value for parameter {fields}"}  # fmt: skip
    assert add_type(sandbox, "Auto")["entityTypeId"] == 128


def test_type_get_list_update_delete(sandbox: LiveSandbox) -> None:
    first = add_type(sandbox, "Orders 5")
    add_type(sandbox, "Leads 0", isCategoriesEnabled="Y")
    add_type(sandbox, "Other")
    assert ok(sandbox.call("crm.type.get", {"id": first["id"]}))["type"] == first
    by_type = ok(sandbox.call("crm.type.getByEntityTypeId", {"entityTypeId": 128}))["type"]
    assert by_type["id"] == first["id"]
    # docs crm-type-list.md example 1: title contains 5 or 0, newest first.
    body = sandbox.call("crm.type.list", {"filter": [{"logic": "OR", "0": {"%title": "5"}, "1": {"%title": "0"}}],
                                          "order": {"id": "DESC"}}).json()  # fmt: skip
    assert [t["title"] for t in body["result"]["types"]] == ["Leads 0", "Orders 5"] and body["total"] == 2
    assert "relations" not in body["result"]["types"][0] and "linkedUserFields" not in body["result"]["types"][0]
    enabled = ok(sandbox.call("crm.type.list", {"filter": {"isCategoriesEnabled": "Y"}}))["types"]
    assert [t["entityTypeId"] for t in enabled] == [129]
    assert error(sandbox.call("crm.type.list", {"filter": {"nope": 1}})) == {
        "error": "INVALID_ARG_VALUE",
        "error_description": "Invalid filter: field 'NOPE' is not allowed in filter",
    }
    assert error(sandbox.call("crm.type.list", {"order": {"id": "UP"}}))["error_description"] == (
        "Invalid order: allowed sort directions are ASC, DESC. But got 'UP' for field 'ID'")  # fmt: skip
    updated = ok(sandbox.call("crm.type.update", {"id": first["id"], "fields": {
        "isDocumentsEnabled": "Y", "entityTypeId": 1030}}))["type"]  # fmt: skip
    assert (updated["isDocumentsEnabled"], updated["entityTypeId"], updated["title"]) == ("Y", 128, "Orders 5")
    assert error(sandbox.call("crm.type.get", {"id": 99})) == {"error": 0, "error_description": "SPA not found"}
    missing = {"error": 0, "error_description": "Smart process not found"}
    assert error(sandbox.call("crm.type.getByEntityTypeId", {"entityTypeId": 999})) == missing
    assert ok(sandbox.call("crm.type.delete", {"id": first["id"]})) == []
    assert error(sandbox.call("crm.type.delete", {"id": first["id"]})) == missing
    assert stages(sandbox, "DYNAMIC_128_STAGE_1") == []  # its funnel and stages went with it


def test_relations_both_sides_and_overwrite(sandbox: LiveSandbox) -> None:
    parent = add_type(sandbox, "Projects")
    child = add_type(sandbox, "Tasks", relations={
        "parent": [{"entityTypeId": 2, "isChildrenListEnabled": "true"}, {"entityTypeId": 128}, {"entityTypeId": 77}],
        "child": [{"entityTypeId": 3, "isChildrenListEnabled": "Y"}]})  # fmt: skip
    assert child["relations"] == {
        "parent": [{"entityTypeId": 2, "isChildrenListEnabled": "Y", "isPredefined": "N"},
                   {"entityTypeId": 128, "isChildrenListEnabled": "N", "isPredefined": "N"}],
        "child": [{"entityTypeId": 3, "isChildrenListEnabled": "N", "isPredefined": "N"}]}  # fmt: skip
    seen = ok(sandbox.call("crm.type.get", {"id": parent["id"]}))["type"]["relations"]
    assert seen == {"parent": [], "child": [{"entityTypeId": 129, "isChildrenListEnabled": "N", "isPredefined": "N"}]}
    ok(sandbox.call("crm.type.update", {"id": parent["id"], "fields": {"relations": {"child": []}}}))
    assert ok(sandbox.call("crm.type.get", {"id": child["id"]}))["type"]["relations"]["parent"] == [
        {"entityTypeId": 2, "isChildrenListEnabled": "Y", "isPredefined": "N"}]  # fmt: skip


def test_new_type_gets_a_default_funnel_with_the_stock_stages(sandbox: LiveSandbox) -> None:
    ok(sandbox.call("crm.category.add", {"entityTypeId": 2, "fields": {"name": "Deals 1"}}))  # funnel 1
    spa = add_type(sandbox, isCategoriesEnabled="Y", isStagesEnabled="Y")
    listed = sandbox.call("crm.category.list", {"entityTypeId": spa["entityTypeId"]}).json()
    # One id sequence for the funnels of every entity type.
    assert listed["result"] == {"categories": [
        {"id": 2, "name": "General", "sort": 500, "entityTypeId": 128, "isDefault": "Y"}]}  # fmt: skip
    assert listed["total"] == 1
    rows = stages(sandbox, "DYNAMIC_128_STAGE_2")
    assert [(r["STATUS_ID"], r["NAME"], r["SORT"], r["SYSTEM"], r["SEMANTICS"], r["COLOR"]) for r in rows] == [
        ("DT128_2:NEW", "Start", "10", "Y", None, "#22B9FF"),
        ("DT128_2:PREPARATION", "Preparation", "20", "N", None, "#88B9FF"),
        ("DT128_2:CLIENT", "Approval", "30", "N", None, "#10e5fc"),
        ("DT128_2:SUCCESS", "Success", "40", "Y", "S", "#00ff00"),
        ("DT128_2:FAIL", "Failure", "50", "Y", "F", "#ff0000"),
    ]
    assert all(r["CATEGORY_ID"] == "2" and "EXTRA" not in r and r["NAME_INIT"] == r["NAME"] for r in rows)
    # crm.status.add into a smart-process list prefixes the code (docs tutorial step 5).
    mine = {"ENTITY_ID": "DYNAMIC_128_STAGE_2", "STATUS_ID": "MY_STAGE", "NAME": "Mine", "SORT": 60, "SEMANTICS": "F"}
    row_id = ok(sandbox.call("crm.status.add", {"fields": mine}))
    added = ok(sandbox.call("crm.status.get", {"id": row_id}))
    assert (added["STATUS_ID"], added["SEMANTICS"], added["CATEGORY_ID"]) == ("DT128_2:MY_STAGE", "F", "2")
    again = sandbox.call("crm.status.add", {"fields": {**mine, "STATUS_ID": "DT128_2:MY_STAGE"}})
    assert error(again)["error_description"] == "The specified status ID already exists."


def test_smart_process_funnels(sandbox: LiveSandbox) -> None:
    spa = add_type(sandbox, isCategoriesEnabled="Y")
    etid = spa["entityTypeId"]
    created = ok(sandbox.call("crm.category.add", {"entityTypeId": etid, "fields": {"name": "B2B", "sort": 10}}))
    assert created == {"category": {"id": 2, "name": "B2B", "sort": 10, "entityTypeId": 128, "isDefault": "N"}}
    assert stages(sandbox, "DYNAMIC_128_STAGE_2")[0]["STATUS_ID"] == "DT128_2:NEW"
    got = ok(sandbox.call("crm.category.get", {"entityTypeId": etid, "id": 2}))["category"]
    assert got["name"] == "B2B"
    # A deal funnel is not one of this smart process's funnels, and the other way round.
    not_found = {"error": "NOT_FOUND", "error_description": "Element not found"}
    assert error(sandbox.call("crm.category.get", {"entityTypeId": etid, "id": 0})) == not_found
    assert error(sandbox.call("crm.category.get", {"entityTypeId": 2, "id": 2})) == not_found
    made_default = ok(sandbox.call("crm.category.update", {"entityTypeId": etid, "id": 2,
                                                           "fields": {"isDefault": "Y"}}))  # fmt: skip
    assert made_default["category"]["isDefault"] == "Y"
    listed = ok(sandbox.call("crm.category.list", {"entityTypeId": etid}))["categories"]
    assert [(c["id"], c["isDefault"]) for c in listed] == [(2, "Y"), (1, "N")]
    assert error(sandbox.call("crm.category.delete", {"entityTypeId": etid, "id": 2})) == {
        "error": "BX_ERROR", "error_description": "This funnel is the default funnel"}  # fmt: skip
    assert ok(sandbox.call("crm.category.delete", {"entityTypeId": etid, "id": 1})) is None
    assert stages(sandbox, "DYNAMIC_128_STAGE_1") == []
    fields = ok(sandbox.call("crm.category.fields", {"entityTypeId": etid}))["fields"]
    assert list(fields) == ["id", "name", "sort", "entityTypeId", "isDefault"]


def test_funnels_need_categories_enabled_to_change(sandbox: LiveSandbox) -> None:
    spa = add_type(sandbox)  # isCategoriesEnabled N
    etid = spa["entityTypeId"]
    listed = ok(sandbox.call("crm.category.list", {"entityTypeId": etid}))["categories"]
    assert [c["isDefault"] for c in listed] == ["Y"]
    assert error(sandbox.call("crm.category.add", {"entityTypeId": etid, "fields": {"name": "x"}})) == {
        "error": "ENTITY_TYPE_NOT_SUPPORTED",
        "error_description": "Entity type `DYNAMIC_128` is not supported",
    }
    assert error(sandbox.call("crm.category.list", {"entityTypeId": 130})) == {
        "error": "NOT_FOUND", "error_description": "Smart process not found"}  # fmt: skip
