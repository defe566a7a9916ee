"""Smart-process items: crm.item.{add,get,list,update,delete,fields} (docs api-reference/crm/universal/crm-item-*.md,
object-fields.md, index.md "Field Naming Conventions")."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import error, ok
from tests.sandbox.test_smart_types import add_type

ALL_ON = {
    "isCategoriesEnabled": "Y", "isStagesEnabled": "Y", "isClientEnabled": "Y", "isLinkWithProductsEnabled": "Y",
    "isBeginCloseDatesEnabled": "Y", "isObserversEnabled": "Y", "isSourceEnabled": "Y", "isMycompanyEnabled": "Y",
}  # fmt: skip
ITEM_KEYS = [
    "id", "title", "xmlId", "createdTime", "updatedTime", "createdBy", "updatedBy", "assignedById", "opened",
    "webformId", "begindate", "closedate", "companyId", "contactId", "categoryId", "movedTime", "movedBy", "stageId",
    "previousStageId", "sourceId", "sourceDescription", "currencyId", "isManualOpportunity", "opportunity", "taxValue",
    "mycompanyId", "lastActivityBy", "lastActivityTime",
]  # fmt: skip


def add_item(sandbox: LiveSandbox, entity_type_id: int = 128, **fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = ok(sandbox.call("crm.item.add", {"entityTypeId": entity_type_id, "fields": fields}))["item"]
    return item


def test_add_fills_the_documented_defaults(sandbox: LiveSandbox) -> None:
    add_type(sandbox, **ALL_ON)
    my_company = ok(sandbox.call("crm.company.add", {"fields": {"TITLE": "Us", "IS_MY_COMPANY": "Y"}}))
    item = add_item(sandbox)
    assert list(item) == [*ITEM_KEYS, "observers", "contactIds", "entityTypeId"]
    created = datetime.fromisoformat(item["createdTime"])
    assert item["createdTime"].endswith("+03:00") and item["updatedTime"] == item["movedTime"] == item["createdTime"]
    assert {k: item[k] for k in ("id", "title", "createdBy", "updatedBy", "assignedById", "movedBy", "opened")} == {
        "id": 1,
        "title": "Orders #1",
        "createdBy": 1,
        "updatedBy": 1,
        "assignedById": 1,
        "movedBy": 1,
        "opened": "Y",
    }
    assert (item["categoryId"], item["stageId"], item["previousStageId"]) == (1, "DT128_1:NEW", None)
    assert (item["sourceId"], item["currencyId"], item["opportunity"], item["isManualOpportunity"]) == (
        "CALL", "USD", 0, "N")  # fmt: skip
    assert (item["mycompanyId"], item["xmlId"], item["companyId"], item["contactIds"], item["observers"]) == (
        my_company, None, None, [], [])  # fmt: skip
    # Dates are midnight UTC shown in the portal's offset, as the docs' begindate example.
    assert item["begindate"] == f"{created.date().isoformat()}T03:00:00+03:00"
    assert item["closedate"] == f"{(created + timedelta(days=7)).date().isoformat()}T03:00:00+03:00"
    assert item["entityTypeId"] == 128
    assert ok(sandbox.call("crm.item.get", {"entityTypeId": 128, "id": 1}))["item"] == item


def test_switched_off_fields_are_null_and_not_written(sandbox: LiveSandbox) -> None:
    add_type(sandbox)  # every switch off
    item = add_item(sandbox, title="Plain", opportunity=50, begindate="2024-06-18", stageId="DT128_1:CLIENT")
    assert (item["title"], item["opportunity"], item["begindate"], item["stageId"], item["contactIds"]) == (
        "Plain", None, None, None, None)  # fmt: skip
    fields = ok(sandbox.call("crm.item.fields", {"entityTypeId": 128}))["fields"]
    assert "opportunity" not in fields and "stageId" not in fields and "title" in fields
    assert error(sandbox.call("crm.item.list", {"entityTypeId": 128, "filter": {"stageId": "x"}}))["error"] == (
        "INVALID_ARG_VALUE")  # fmt: skip


def test_values_are_natives_and_contacts_stay_consistent(sandbox: LiveSandbox) -> None:
    add_type(sandbox, **ALL_ON)
    ann, bob = (ok(sandbox.call("crm.contact.add", {"fields": {"NAME": n}})) for n in ("Ann", "Bob"))
    item = add_item(sandbox, title="Boiler", opportunity="99.5", contactIds=[bob, ann], observers=[2],
                    begindate="2024-06-18", assignedById="2", xmlId="partner:DEAL:7")  # fmt: skip
    assert (item["opportunity"], item["assignedById"], item["observers"]) == (99.5, 2, [2])
    assert (item["contactId"], item["contactIds"]) == (bob, [bob, ann])  # the first of the set is primary
    assert item["begindate"] == "2024-06-18T03:00:00+03:00" and item["xmlId"] == "partner:DEAL:7"
    again = ok(sandbox.call("crm.item.update", {"entityTypeId": 128, "id": item["id"],
                                                "fields": {"contactId": ann}}))["item"]  # fmt: skip
    assert (again["contactId"], again["contactIds"]) == (ann, [ann, bob])


def test_item_errors(sandbox: LiveSandbox) -> None:
    add_type(sandbox, **ALL_ON)
    assert error(sandbox.call("crm.item.add", {"entityTypeId": 999, "fields": {}})) == {
        "error": "NOT_FOUND", "error_description": "Smart process not found"}  # fmt: skip
    assert error(sandbox.call("crm.item.get", {"entityTypeId": 128, "id": 5})) == {
        "error": "NOT_FOUND", "error_description": "Item not found"}  # fmt: skip
    assert error(sandbox.call("crm.item.delete", {"entityTypeId": 128, "id": 5}))["error"] == "NOT_FOUND"
    assert error(sandbox.call("crm.item.update", {"entityTypeId": 128, "id": 5, "fields": {}}))["error"] == "NOT_FOUND"
    bad = {"error": "CRM_FIELD_ERROR_VALUE_NOT_VALID", "error_description": 'Invalid value for field "Stage"'}
    assert error(sandbox.call("crm.item.add", {"entityTypeId": 128, "fields": {"stageId": "DT128_1:NOPE"}})) == bad
    assert error(sandbox.call("crm.item.add", {"entityTypeId": 128, "fields": {"categoryId": 0}}))[
        "error_description"] == 'Invalid value for field "Pipeline"'  # a deal funnel is not this type's  # fmt: skip
    for field, value in (("assignedById", 77), ("contactId", 5), ("sourceId", "NOPE"), ("begindate", "soon")):
        assert error(sandbox.call("crm.item.add", {"entityTypeId": 128, "fields": {field: value}}))["error"] == (
            "CRM_FIELD_ERROR_VALUE_NOT_VALID"), field  # fmt: skip
    assert error(sandbox.call("crm.item.add", {"entityTypeId": 128, "fields": {"observers": 2}})) == {
        "error": 100,
        "error_description": "Expected iterable value for multiple field, but got integer instead",
    }
    assert error(sandbox.call("crm.item.add", {"entityTypeId": 5, "fields": {}}))["error"] == (
        "ENTITY_TYPE_NOT_SUPPORTED")  # fmt: skip
    deals = error(sandbox.call("crm.item.list", {"entityTypeId": 2}))
    assert deals["error"] == "ENTITY_TYPE_NOT_SUPPORTED" and "smart processes only" in deals["error_description"]
    # A refused add takes no id.
    assert add_item(sandbox)["id"] == 1


def test_update_moves_stages_and_funnels(sandbox: LiveSandbox) -> None:
    add_type(sandbox, **ALL_ON)
    second = ok(sandbox.call("crm.category.add", {"entityTypeId": 128, "fields": {"name": "B2B"}}))["category"]["id"]
    item = add_item(sandbox, title="T")
    moved = ok(sandbox.call("crm.item.update", {"entityTypeId": 128, "id": item["id"],
                                                "fields": {"stageId": "DT128_1:SUCCESS"}}))["item"]  # fmt: skip
    assert (moved["stageId"], moved["previousStageId"]) == ("DT128_1:SUCCESS", "DT128_1:NEW")
    # Another funnel without a stage of its own: its first stage of the same semantics (success here).
    other = ok(sandbox.call("crm.item.update", {"entityTypeId": 128, "id": item["id"],
                                                "fields": {"categoryId": second}}))["item"]  # fmt: skip
    assert (other["categoryId"], other["stageId"]) == (second, f"DT128_{second}:SUCCESS")
    given = ok(sandbox.call("crm.item.update", {"entityTypeId": 128, "id": item["id"], "fields": {
        "categoryId": 1, "stageId": "DT128_1:CLIENT"}}))["item"]  # fmt: skip
    assert (given["categoryId"], given["stageId"]) == (1, "DT128_1:CLIENT")
    # A stage of another funnel without moving there is refused; the title cannot be cleared.
    wrong = sandbox.call("crm.item.update", {"entityTypeId": 128, "id": item["id"],
                                             "fields": {"stageId": f"DT128_{second}:NEW"}})  # fmt: skip
    assert error(wrong)["error"] == "CRM_FIELD_ERROR_VALUE_NOT_VALID"
    kept = ok(sandbox.call("crm.item.update", {"entityTypeId": 128, "id": item["id"], "fields": {"title": ""}}))
    assert kept["item"]["title"] == "T"
    assert ok(sandbox.call("crm.item.delete", {"entityTypeId": 128, "id": item["id"]})) == []
    assert error(sandbox.call("crm.item.get", {"entityTypeId": 128, "id": item["id"]}))["error"] == "NOT_FOUND"


def test_list_filters_orders_selects_and_pages(sandbox: LiveSandbox) -> None:
    add_type(sandbox, **ALL_ON)
    for n in range(55):
        stage = "DT128_1:CLIENT" if n % 5 == 0 else "DT128_1:NEW"
        add_item(sandbox, title=f"Order {n}", xmlId=f"partner:DEAL:{n}", stageId=stage, opportunity=n)
    found = ok(sandbox.call("crm.item.list", {"entityTypeId": 128, "filter": {"=xmlId": "partner:DEAL:7"}}))
    assert [i["title"] for i in found["items"]] == ["Order 7"]
    plain = ok(sandbox.call("crm.item.list", {"entityTypeId": 128, "filter": {"xmlId": "PARTNER:deal:7"}}))["items"]
    assert [i["id"] for i in plain] == [8]  # exact match, case-insensitive as the portal's collation
    assert ok(sandbox.call("crm.item.list", {"entityTypeId": 128, "filter": {"xmlId": "partner:DEAL"}}))["items"] == []
    body = sandbox.call("crm.item.list", {
        "entityTypeId": 128, "filter": {"stageId": "DT128_1:CLIENT", ">=opportunity": 10},
        "order": {"opportunity": "DESC"}, "select": ["id", "stageId", "opportunity"]}).json()  # fmt: skip
    assert body["result"]["items"][0] == {"id": 51, "stageId": "DT128_1:CLIENT", "opportunity": 50}
    assert [i["opportunity"] for i in body["result"]["items"]] == [50, 45, 40, 35, 30, 25, 20, 15, 10]
    assert body["total"] == 9 and "next" not in body
    either = {"0": {"logic": "OR", "0": {"@id": [1, 2]}, "1": {"%title": "Order 54"}}}
    listed = ok(sandbox.call("crm.item.list", {"entityTypeId": 128, "filter": either, "select": ["id"]}))["items"]
    assert listed == [{"id": 1}, {"id": 2}, {"id": 55}]
    first = sandbox.call("crm.item.list", {"entityTypeId": 128, "select": ["id"]}).json()
    assert (len(first["result"]["items"]), first["total"], first["next"]) == (50, 55, 50)
    rest = sandbox.call("crm.item.list", {"entityTypeId": 128, "select": ["id"], "start": 50}).json()
    assert [i["id"] for i in rest["result"]["items"]] == [51, 52, 53, 54, 55] and "next" not in rest
    quick = sandbox.call("crm.item.list", {"entityTypeId": 128, "select": ["id"], "start": -1}).json()
    assert len(quick["result"]["items"]) == 50 and quick["total"] == 0 and "next" not in quick
    for params, text in (
        ({"filter": {"nope": 1}}, "Invalid filter: field 'NOPE' is not allowed in filter"),
        ({"filter": {"id": "abc"}}, "Invalid filter: field 'ID' has invalid value"),
        ({"order": {"xmlId": "UP"}}, "Invalid order: allowed sort directions are ASC, DESC. But got 'UP' for field "
                                     "'XML_ID'"),
        ({"order": {"nope": "ASC"}}, "Invalid order: field 'NOPE' is not allowed in order"),
    ):  # fmt: skip
        answer = error(sandbox.call("crm.item.list", {"entityTypeId": 128, **params}))
        assert answer == {"error": "INVALID_ARG_VALUE", "error_description": text}


def test_user_field_names_follow_use_original_uf_names(sandbox: LiveSandbox) -> None:
    spa = add_type(sandbox)  # type id 1: its user fields are UF_CRM_1_...
    item = add_item(sandbox, ufCrm1Note="hello", UF_CRM_1_1747309727=5, UF_CRM_1_DIGIT10="x", ufCrm9Other="no")
    assert (item["ufCrm1Note"], item["ufCrm1_1747309727"], item["ufCrm_1_DIGIT10"]) == ("hello", 5, "x")
    assert "ufCrm9Other" not in item  # another object's field: ignored
    original = ok(sandbox.call("crm.item.get", {"entityTypeId": spa["entityTypeId"], "id": item["id"],
                                                "useOriginalUfNames": "Y"}))["item"]  # fmt: skip
    assert (original["UF_CRM_1_NOTE"], original["UF_CRM_1_1747309727"], original["UF_CRM_1_DIGIT10"]) == (
        "hello", 5, "x")  # fmt: skip
    assert "ufCrm1Note" not in original
    listed = ok(
        sandbox.call(
            "crm.item.list",
            {
                "entityTypeId": 128,
                "filter": {"UF_CRM_1_NOTE": "hello"},
                "select": ["id", "UF_CRM_1_NOTE"],
                "useOriginalUfNames": "Y",
            },
        )
    )
    assert listed["items"] == [{"id": item["id"], "UF_CRM_1_NOTE": "hello"}]
    camel = ok(sandbox.call("crm.item.list", {"entityTypeId": 128, "filter": {"ufCrm1Note": "hello"},
                                              "select": ["ufCrm1Note"]}))  # fmt: skip
    assert camel["items"] == [{"ufCrm1Note": "hello"}]


def test_fields_describe_the_type(sandbox: LiveSandbox) -> None:
    add_type(sandbox, **ALL_ON, relations={"parent": [{"entityTypeId": 2}]})
    fields = ok(sandbox.call("crm.item.fields", {"entityTypeId": 128}))["fields"]
    assert fields["stageId"] == {
        "type": "crm_status",
        "isRequired": False,
        "isReadOnly": False,
        "isImmutable": False,
        "isMultiple": False,
        "isDynamic": False,
        "statusType": "DYNAMIC_128_STAGE_1",
        "title": "Stage",
        "upperName": "STAGE_ID",
    }
    assert fields["companyId"]["settings"] == {"parentEntityTypeId": 4} and fields["contactId"]["isDeprecated"]
    assert fields["parentId2"]["title"] == "Deal" and fields["parentId2"]["upperName"] == "PARENT_ID_2"
    assert fields["opened"]["isRequired"] and fields["contactIds"]["isMultiple"]
    item = add_item(sandbox, parentId2=4)
    assert item["parentId2"] == 4


def test_what_holds_items_cannot_go(sandbox: LiveSandbox) -> None:
    spa = add_type(sandbox, **ALL_ON)
    second = ok(sandbox.call("crm.category.add", {"entityTypeId": 128, "fields": {"name": "B2B"}}))["category"]["id"]
    item = add_item(sandbox, categoryId=second, stageId=f"DT128_{second}:CLIENT")
    rows = ok(sandbox.call("crm.status.list", {"filter": {"ENTITY_ID": f"DYNAMIC_128_STAGE_{second}"}}))
    stage = next(r for r in rows if r["STATUS_ID"] == f"DT128_{second}:CLIENT")
    assert error(sandbox.call("crm.status.delete", {"id": stage["ID"]}))["error_description"] == (
        "There are active items in this status.")  # fmt: skip
    assert error(sandbox.call("crm.category.delete", {"entityTypeId": 128, "id": second})) == {
        "error": "BX_ERROR", "error_description": "Elements related to the funnel found"}  # fmt: skip
    assert error(sandbox.call("crm.type.delete", {"id": spa["id"]})) == {
        "error": "BX_ERROR", "error_description": "You cannot delete an entity type that has elements"}  # fmt: skip
    not_like = ok(sandbox.call("crm.item.list", {"entityTypeId": 128, "filter": {"!%title": "Orders"}}))["items"]
    assert not_like == []
    ok(sandbox.call("crm.item.delete", {"entityTypeId": 128, "id": item["id"]}))
    assert ok(sandbox.call("crm.status.delete", {"id": stage["ID"]})) is True
    assert ok(sandbox.call("crm.category.delete", {"entityTypeId": 128, "id": second})) is None
    assert ok(sandbox.call("crm.type.delete", {"id": spa["id"]})) == []
