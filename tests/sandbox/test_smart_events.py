"""Smart-process items in the rest of the portal: ONCRMDYNAMICITEM{ADD,UPDATE,DELETE} (docs
crm/universal/events/on-crm-dynamic-item-*.md), robots and outbound webhooks on their stages (REFERENCE 5.4),
``batch`` references into their answers and the saved world."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.livehttp import Receiver
from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import EVENT_AUTH_KEYS, error, form, installed_app, ok, rest
from tests.sandbox.test_automation import setup_robot, workflows
from tests.sandbox.test_batch import batch
from tests.sandbox.test_smart_items import add_item
from tests.sandbox.test_smart_types import add_type

EVENTS = ("ONCRMDYNAMICITEMADD", "ONCRMDYNAMICITEMUPDATE", "ONCRMDYNAMICITEMDELETE")
DOCUMENT = "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"


def test_item_events_reach_bound_handlers(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, installed = installed_app(sandbox, receiver)
    token = installed["auth[access_token]"]
    assert set(EVENTS) <= set(rest(sandbox, "events", token).json()["result"])
    for event in EVENTS:
        assert rest(sandbox, "event.bind", token, event=event, handler=receiver.url("/spa")).json()["result"] is True
    add_type(sandbox, isStagesEnabled="Y")
    add_type(sandbox, "Other", entityTypeId=1030)
    item = add_item(sandbox, title="First")
    ok(sandbox.call("crm.item.update", {"entityTypeId": 128, "id": item["id"], "fields": {"title": "Renamed"}}))
    ok(sandbox.call("crm.item.update", {"entityTypeId": 128, "id": item["id"], "fields": {"title": "Renamed"}}))
    other = add_item(sandbox, 1030)
    ok(sandbox.call("crm.item.delete", {"entityTypeId": 128, "id": item["id"]}))
    ok(sandbox.call("crm.deal.add", {"fields": {"TITLE": "not an item"}}))
    got = receiver.wait_for(4, path="/spa")
    sent = [(f["event"], f["data[FIELDS][ID]"], f["data[FIELDS][ENTITY_TYPE_ID]"]) for f in map(form, got)]
    # Each change is its own delivery, so they may arrive in any order (the queue does not keep one).
    assert sorted(sent) == sorted([
        ("ONCRMDYNAMICITEMADD", str(item["id"]), "128"),
        ("ONCRMDYNAMICITEMUPDATE", str(item["id"]), "128"),  # the second update changed nothing: no event
        ("ONCRMDYNAMICITEMADD", str(other["id"]), "1030"),
        ("ONCRMDYNAMICITEMDELETE", str(item["id"]), "128"),
    ])  # fmt: skip
    calls = sandbox.control("GET", "/_sandbox/handler-calls?kind=event&settle=1")["calls"]
    assert len(calls) == 4 and all(c["ok"] for c in calls)
    keys = [k for k, _ in got[0]["form"]]
    assert keys == ["event", "event_handler_id", "data[FIELDS][ID]", "data[FIELDS][ENTITY_TYPE_ID]", "ts",
                    *(f"auth[{k}]" for k in EVENT_AUTH_KEYS)]  # fmt: skip
    assert form(got[0])["auth[user_id]"] == "1"


def test_offline_queue_keeps_items_of_different_types_apart(sandbox: LiveSandbox, receiver: Receiver) -> None:
    _, installed = installed_app(sandbox, receiver)
    token = installed["auth[access_token]"]
    assert rest(sandbox, "event.bind", token, event="ONCRMDYNAMICITEMADD", event_type="offline").json()["result"]
    add_type(sandbox)
    add_type(sandbox, "Other")
    add_item(sandbox, 128)
    add_item(sandbox, 129)  # the same item id 1 in another type is another object
    queued = rest(sandbox, "event.offline.get", token).json()["result"]["events"]
    assert [e["EVENT_DATA"]["FIELDS"] for e in queued] == [
        {"ID": "1", "ENTITY_TYPE_ID": "128"}, {"ID": "1", "ENTITY_TYPE_ID": "129"}]  # fmt: skip


def test_robot_on_a_smart_process_stage(sandbox: LiveSandbox, receiver: Receiver) -> None:
    setup_robot(sandbox, receiver.url("/robot"), USE_SUBSCRIPTION="N")
    add_type(sandbox, isStagesEnabled="Y", isCategoriesEnabled="Y")
    refused = sandbox.http.post("/_sandbox/automation/rules", json={
        "entity": "DYNAMIC_128", "stage_id": "DT128_1:CLIENT", "robot_code": "send_sms"})  # fmt: skip
    assert refused.status_code == 400 and "isAutomationEnabled" in refused.text
    ok(sandbox.call("crm.type.update", {"id": 1, "fields": {"isAutomationEnabled": "Y"}}))
    rule = {"entity": "DYNAMIC_128", "stage_id": "DT128_1:CLIENT", "robot_code": "send_sms",
            "properties": {"text": "{=Document:TITLE} is {=Document:STAGE_ID}"}}  # fmt: skip
    created = sandbox.control("POST", "/_sandbox/automation/rules", rule)
    assert (created["entity"], created["category_id"]) == ("DYNAMIC_128", 1)  # the default funnel
    item = add_item(sandbox, title="Pump")
    assert workflows(sandbox) == []
    ok(
        sandbox.call(
            "crm.item.update", {"entityTypeId": 128, "id": item["id"], "fields": {"stageId": "DT128_1:CLIENT"}}
        )
    )
    [request] = receiver.wait_for(1, path="/robot")
    fields = dict(request["form"])
    assert [fields[f"document_id[{i}]"] for i in range(3)] == ["crm", DOCUMENT, f"DYNAMIC_128_{item['id']}"]
    assert [fields[f"document_type[{i}]"] for i in range(3)] == ["crm", DOCUMENT, "DYNAMIC_128"]
    assert fields["properties[text]"] == "Pump is DT128_1:CLIENT"
    [wf] = workflows(sandbox)
    assert wf["document_id"] == ["crm", DOCUMENT, f"DYNAMIC_128_{item['id']}"] and wf["status"] == "completed"
    hook = {"type": "webhook", "entity": "DYNAMIC_128", "stage_id": "DT128_1:SUCCESS",
            "handler": receiver.url("/hook?item={=Document:ID}")}  # fmt: skip
    sandbox.control("POST", "/_sandbox/automation/rules", hook)
    ok(
        sandbox.call(
            "crm.item.update", {"entityTypeId": 128, "id": item["id"], "fields": {"stageId": "DT128_1:SUCCESS"}}
        )
    )
    [call] = receiver.wait_for(1, path="/hook")
    assert call["query"] == {"item": str(item["id"])}
    assert [v for _, v in call["form"]] == ["crm", DOCUMENT, f"DYNAMIC_128_{item['id']}"]


def test_batch_refers_to_a_nested_result(sandbox: LiveSandbox) -> None:
    add_type(sandbox, isStagesEnabled="Y")
    result = batch(sandbox, {
        "item": "crm.item.add?entityTypeId=128&fields[title]=Batch&fields[xmlId]=b:1",
        "moved": "crm.item.update?entityTypeId=128&id=$result[item][item][id]&fields[stageId]=DT128_1:CLIENT",
        "again": "crm.item.get?entityTypeId=128&id=$result[moved][item][id]",
        "title": "crm.item.list?entityTypeId=128&filter[title]=$result[again][item][title]",
    })  # fmt: skip
    assert result["result_error"] == []
    item_id = result["result"]["item"]["item"]["id"]
    assert result["result"]["moved"]["item"]["stageId"] == "DT128_1:CLIENT"
    assert result["result"]["again"]["item"]["id"] == item_id
    assert [i["xmlId"] for i in result["result"]["title"]["items"]] == ["b:1"]
    assert result["result_total"] == {"title": 1}


def test_types_funnels_and_items_are_saved_with_the_world(
    sandbox_factory: Callable[..., LiveSandbox], tmp_path: Path
) -> None:
    path = tmp_path / "world.json"
    first = sandbox_factory(limits_enabled=False, state_path=path)
    add_type(first, isCategoriesEnabled="Y", isStagesEnabled="Y")
    extra = ok(first.call("crm.category.add", {"entityTypeId": 128, "fields": {"name": "B2B"}}))["category"]["id"]
    item = add_item(first, title="Kept", xmlId="k:1", categoryId=extra)
    assert first.control("GET", "/_sandbox/crm/counts")["counts"]["DYNAMIC_128"] == 1
    first.control("POST", "/_sandbox/state/save")
    first.stop()
    second = sandbox_factory(limits_enabled=False, state_path=path)
    assert ok(second.call("crm.item.get", {"entityTypeId": 128, "id": item["id"]}))["item"] == item
    assert [c["id"] for c in ok(second.call("crm.category.list", {"entityTypeId": 128}))["categories"]] == [1, extra]
    assert add_item(second, title="Next")["id"] == item["id"] + 1
    assert add_type(second, "Second")["id"] == 2
    second.reset()
    assert error(second.call("crm.item.get", {"entityTypeId": 128, "id": 1}))["error"] == "NOT_FOUND"
    assert ok(second.call("crm.type.list", {}))["types"] == []
    assert isinstance(second.control("GET", "/_sandbox/crm/counts")["counts"], dict)
