"""Deal funnels and their stages: crm.category.*, crm.status.*, crm.dealcategory.* and where deals end up
(docs api-reference/crm/universal/category, crm/status, crm/outdated/category-old; REFERENCE 6.4)."""

from __future__ import annotations

from typing import Any

from tests.sandbox.conftest import LiveSandbox

STOCK = ["NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE", "WON", "LOSE", "APOLOGY"]


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


def error(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    return body


def add_funnel(sandbox: LiveSandbox, name: str = "Partners", **fields: Any) -> int:
    created = ok(sandbox.call("crm.category.add", {"entityTypeId": 2, "fields": {"name": name, **fields}}))
    category_id: int = created["category"]["id"]
    return category_id


def stages(sandbox: LiveSandbox, entity_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = ok(sandbox.call("crm.status.list", {"filter": {"ENTITY_ID": entity_id}}))
    return rows


def test_new_funnel_gets_the_stock_stages_under_its_prefix(sandbox: LiveSandbox) -> None:
    created = ok(sandbox.call("crm.category.add", {"entityTypeId": 2, "fields": {"name": "Partners", "sort": -5}}))
    assert created == {"category": {"id": 1, "name": "Partners", "sort": 0, "entityTypeId": 2, "isDefault": "N",
                                    "originId": "", "originatorId": ""}}  # fmt: skip
    rows = stages(sandbox, "DEAL_STAGE_1")
    assert [r["STATUS_ID"] for r in rows] == [f"C1:{s}" for s in STOCK]
    new, won = rows[0], rows[5]
    assert (new["ENTITY_ID"], new["CATEGORY_ID"], new["SORT"], new["SYSTEM"]) == ("DEAL_STAGE_1", "1", "10", "Y")
    assert (won["SEMANTICS"], won["EXTRA"]["SEMANTICS"], won["NAME"]) == ("S", "success", "Deal successful")
    assert rows[7]["EXTRA"]["SEMANTICS"] == "apology" and rows[7]["SEMANTICS"] == "F"
    assert len({r["ID"] for r in rows} | {r["ID"] for r in stages(sandbox, "DEAL_STAGE")}) == 16
    # The default funnel's list is DEAL_STAGE; there is no DEAL_STAGE_0 (docs: an empty list, no error).
    assert stages(sandbox, "DEAL_STAGE_0") == []
    listed = sandbox.call("crm.category.list", {"entityTypeId": 2}).json()
    assert [c["id"] for c in listed["result"]["categories"]] == [1, 0] and listed["total"] == 2


def test_stage_codes_are_cut_to_21_characters(sandbox: LiveSandbox) -> None:
    for number in range(10):
        category_id = add_funnel(sandbox, f"F{number}")
    assert category_id == 10
    codes = [r["STATUS_ID"] for r in stages(sandbox, "DEAL_STAGE_10")]
    assert codes[2] == "C10:PREPAYMENT_INVOIC"  # docs how-to-get-elements-by-stage-filter.md


def test_category_get_update_delete_and_errors(sandbox: LiveSandbox) -> None:
    category_id = add_funnel(sandbox)
    got = ok(sandbox.call("crm.category.get", {"entityTypeId": 2, "id": category_id}))["category"]
    assert got["name"] == "Partners"
    renamed = ok(sandbox.call("crm.category.update", {"entityTypeId": 2, "id": category_id,
                                                      "fields": {"name": "Resellers", "sort": 50}}))  # fmt: skip
    assert (renamed["category"]["name"], renamed["category"]["sort"]) == ("Resellers", 50)
    assert error(sandbox.call("crm.category.get", {"entityTypeId": 2, "id": 99})) == {
        "error": "NOT_FOUND", "error_description": "Element not found"}  # fmt: skip
    assert error(sandbox.call("crm.category.add", {"entityTypeId": 2, "fields": {"sort": 1}})) == {
        "error": 0, "error_description": "Field 'NAME' is required"}  # fmt: skip
    assert error(sandbox.call("crm.category.list", {"entityTypeId": 4}))["error"] == "ENTITY_TYPE_NOT_SUPPORTED"
    default = sandbox.call("crm.category.delete", {"entityTypeId": 2, "id": 0})
    assert error(default) == {"error": 0, "error_description": "Default deal category cannot be deleted"}
    deal = ok(sandbox.call("crm.deal.add", {"fields": {"CATEGORY_ID": category_id}}))
    busy = error(sandbox.call("crm.category.delete", {"entityTypeId": 2, "id": category_id}))
    assert busy["error_description"] == "Deals related to the funnel `Resellers` found"
    ok(sandbox.call("crm.deal.delete", {"id": deal}))
    assert ok(sandbox.call("crm.category.delete", {"entityTypeId": 2, "id": category_id})) is None
    assert stages(sandbox, f"DEAL_STAGE_{category_id}") == []
    fields = ok(sandbox.call("crm.category.fields", {"entityTypeId": 2}))["fields"]
    assert fields["isDefault"]["isReadOnly"] is True and fields["name"]["upperName"] == "NAME"


def test_deals_get_stages_of_their_own_funnel(sandbox: LiveSandbox) -> None:
    category_id = add_funnel(sandbox)
    prefix = f"C{category_id}:"

    def deal(**fields: Any) -> dict[str, Any]:
        new_id = ok(sandbox.call("crm.deal.add", {"fields": fields}))
        got: dict[str, Any] = ok(sandbox.call("crm.deal.get", {"id": new_id}))
        return got

    first = deal(CATEGORY_ID=category_id)
    assert (first["STAGE_ID"], first["IS_NEW"], first["STAGE_SEMANTIC_ID"]) == (f"{prefix}NEW", "Y", "P")
    # A stage of another funnel: the first stage of the same group in this one (Field\\Stage::processLogic).
    won = deal(CATEGORY_ID=category_id, STAGE_ID="WON")
    assert (won["STAGE_ID"], won["CLOSED"], won["STAGE_SEMANTIC_ID"]) == (f"{prefix}WON", "Y", "S")
    assert deal(CATEGORY_ID=category_id, STAGE_ID="APOLOGY")["STAGE_ID"] == f"{prefix}LOSE"
    assert deal(CATEGORY_ID=category_id, STAGE_ID="NO_SUCH")["STAGE_ID"] == f"{prefix}NEW"
    assert deal(STAGE_ID=f"{prefix}EXECUTING")["STAGE_ID"] == "NEW"
    # A funnel that does not exist is the default one (CCrmDeal::Add).
    assert (deal(CATEGORY_ID=77)["CATEGORY_ID"], deal(CATEGORY_ID=77)["STAGE_ID"]) == ("0", "NEW")
    # On update a stage from elsewhere is ignored: the deal keeps its stage, and its funnel.
    ok(sandbox.call("crm.deal.update", {"id": first["ID"], "fields": {"STAGE_ID": "EXECUTING", "CATEGORY_ID": 0}}))
    kept = ok(sandbox.call("crm.deal.get", {"id": first["ID"]}))
    assert (kept["STAGE_ID"], kept["CATEGORY_ID"]) == (f"{prefix}NEW", str(category_id))
    ok(sandbox.call("crm.deal.update", {"id": first["ID"], "fields": {"STAGE_ID": f"{prefix}EXECUTING"}}))
    moved = ok(sandbox.call("crm.deal.get", {"id": first["ID"]}))
    assert (moved["STAGE_ID"], moved["IS_NEW"]) == (f"{prefix}EXECUTING", "N")
    listed = ok(sandbox.call("crm.deal.list", {"filter": {"CATEGORY_ID": category_id}, "select": ["ID"]}))
    assert len(listed) == 4


def test_control_moves_stay_inside_the_funnel(sandbox: LiveSandbox) -> None:
    category_id = add_funnel(sandbox)
    deal_id = ok(sandbox.call("crm.deal.add", {"fields": {"CATEGORY_ID": category_id}}))
    wrong = sandbox.http.post(f"/_sandbox/deals/{deal_id}/stage", json={"stage_id": "WON"})
    assert wrong.status_code == 400 and "has no stage 'WON'" in wrong.json()["error"]
    many = sandbox.http.post("/_sandbox/deals/move", json={"deal_ids": [deal_id], "stage_id": "WON"})
    assert many.status_code == 400
    moved = sandbox.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": f"C{category_id}:WON"})
    assert (moved["deal"]["STAGE_ID"], moved["deal"]["STAGE_SEMANTIC_ID"]) == (f"C{category_id}:WON", "S")


def test_status_add_update_delete(sandbox: LiveSandbox) -> None:
    category_id = add_funnel(sandbox)
    fields = {"ENTITY_ID": f"DEAL_STAGE_{category_id}", "STATUS_ID": "DECISION", "NAME": "Decision", "SORT": 25}
    new_id = ok(sandbox.call("crm.status.add", {"fields": fields}))
    assert isinstance(new_id, int)
    row = ok(sandbox.call("crm.status.get", {"id": new_id}))
    assert (row["STATUS_ID"], row["CATEGORY_ID"], row["SORT"], row["SEMANTICS"]) == (
        f"C{category_id}:DECISION", str(category_id), "25", None)  # fmt: skip
    assert "EXTRA" not in row
    codes = [r["STATUS_ID"] for r in stages(sandbox, f"DEAL_STAGE_{category_id}")]
    assert codes.index(f"C{category_id}:DECISION") == 2
    assert error(sandbox.call("crm.status.add", {"fields": fields})) == {
        "error": "ERROR_CORE", "error_description": "The specified status ID already exists."}  # fmt: skip
    late = error(sandbox.call("crm.status.add", {"fields": {**fields, "STATUS_ID": "LATE", "SORT": 65}}))
    assert late["error_description"].startswith("Cannot create more stages after the final stage")
    assert error(sandbox.call("crm.status.add", {"fields": {"NAME": "x"}}))["error_description"] == (
        "The field ENTITY_ID is required.<br>The field STATUS_ID is required.")  # fmt: skip
    assert error(sandbox.call("crm.status.add", {"fields": {**fields, "ENTITY_ID": "NOPE"}})) == {
        "error": "", "error_description": "Specified entity type is not supported."}  # fmt: skip
    ok(sandbox.call("crm.status.update", {"id": new_id, "fields": {"NAME": "Decided", "COLOR": "#000000"}}))
    assert ok(sandbox.call("crm.status.get", {"id": new_id}))["NAME"] == "Decided"
    deal_id = ok(sandbox.call("crm.deal.add", {"fields": {"CATEGORY_ID": category_id,
                                                          "STAGE_ID": f"C{category_id}:DECISION"}}))  # fmt: skip
    assert error(sandbox.call("crm.status.delete", {"id": new_id}))["error_description"] == (
        "There are active items in this status.")  # fmt: skip
    ok(sandbox.call("crm.deal.delete", {"id": deal_id}))
    assert ok(sandbox.call("crm.status.delete", {"id": new_id})) is True
    system = stages(sandbox, "DEAL_STAGE")[0]["ID"]
    assert "FORCED" in error(sandbox.call("crm.status.delete", {"id": system}))["error_description"]
    assert error(sandbox.call("crm.status.get", {"id": new_id})) == {
        "error": "Status is not found.", "error_description": "Directory item not found."}  # fmt: skip
    items = ok(sandbox.call("crm.status.entity.items", {"entityId": "DEAL_STAGE"}))
    assert items[0] == {"NAME": "New", "SORT": 10, "STATUS_ID": "NEW"} and len(items) == 8


def test_deprecated_dealcategory_readers(sandbox: LiveSandbox) -> None:
    category_id = ok(sandbox.call("crm.dealcategory.add", {"fields": {"NAME": "Legacy", "SORT": 10}}))
    listed = sandbox.call("crm.dealcategory.list").json()
    assert [c["ID"] for c in listed["result"]] == [str(category_id)] and listed["total"] == 1
    got = ok(sandbox.call("crm.dealcategory.get", {"id": category_id}))
    assert (got["NAME"], got["SORT"], got["IS_LOCKED"]) == ("Legacy", "10", "N")
    assert ok(sandbox.call("crm.dealcategory.status", {"id": category_id})) == f"DEAL_STAGE_{category_id}"
    assert ok(sandbox.call("crm.dealcategory.status", {"id": 0})) == "DEAL_STAGE"
    assert ok(sandbox.call("crm.dealcategory.stage.list", {"id": category_id})) == stages(
        sandbox, f"DEAL_STAGE_{category_id}")  # fmt: skip
