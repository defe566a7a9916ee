"""Smart processes (issue 18): a partner's deals become items of the target's "Orders" process, named by its title,
their contacts linked once and each item written once however often it is handed over, and the item's stage comes
back into the deal; the other way, a process's items become deals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from b24bridge.bridge.intake import status_secret
from b24bridge.portals import crypto
from tests.bridge_flows.conftest import HOOK_SECRET, KEY, BridgeService, new_deal, new_process, result, robot_rule
from tests.sandbox.conftest import CloudPortal

ORDERS = """
portals:
  partner:
    webhook: ${SOURCE_WEBHOOK}
  acme:
    webhook: ${TARGET_WEBHOOK}
routes:
  deals-to-orders:
    source: partner
    target: acme
    target_entity: {smart_process: Orders}
    triggers:
      hook:
        secret: ${HOOK_SECRET}
    item:
      TITLE: "{{ deal.TITLE }} (partner deal {{ deal.ID }})"
      OPPORTUNITY: {from: OPPORTUNITY, type: money}
      STAGE_ID: {from: STAGE_ID, map: {NEW: "STAGE:NEW", PREPARATION: "STAGE:PREPARATION"}}
    contact:
      match: [phone]
      fields:
        NAME: {from: NAME}
        PHONE: {from: PHONE}
    status_back:
      stages: {"STAGE:SUCCESS": WON, "STAGE:FAIL": LOSE}
      fields:
        UF_CRM_ORDER: "{{ target.ID }}"
"""


def items(portal: CloudPortal, entity_type_id: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    start: Any = 0
    while True:
        params = {"entityTypeId": entity_type_id, "select": ["*"], "order": {"id": "ASC"}, "start": start}
        body = portal.call("crm.item.list", params).json()
        rows += body["result"]["items"]
        if "next" not in body:
            return rows
        start = body["next"]


def hand_over(bridge: BridgeService, route: str, records: list[Any]) -> None:
    with httpx.Client(timeout=10) as client:
        for record in records:
            answer = client.get(
                f"{bridge.base_url}/bridge/hooks/{route}", params={"secret": HOOK_SECRET, "deal": str(record)}
            )
            assert answer.status_code == 200, answer.text


@pytest.mark.timeout(240)
def test_deals_become_items_of_a_process_named_by_title_and_the_items_stage_comes_back(
    portals: tuple[CloudPortal, CloudPortal], bridge_factory: Callable[..., BridgeService]
) -> None:
    source, target = portals
    new_process(target, "Warehouse")  # another process first: the title must find the right entityTypeId
    orders, pipeline = new_process(target, "Orders")
    stage = f"DT{orders}_{pipeline}"
    bridge = bridge_factory(ORDERS.replace("STAGE:", f"{stage}:"))
    result(source, "crm.deal.userfield.add", {"fields": {"FIELD_NAME": "ORDER", "USER_TYPE_ID": "string"}})
    contacts = [
        result(source, "crm.contact.add", {"fields": {"NAME": f"Ann{n}",
                                                      "PHONE": [{"VALUE": f"+1555100{n:04d}", "VALUE_TYPE": "WORK"}]}})
        for n in range(20)
    ]  # fmt: skip
    deals = [
        new_deal(source, TITLE=f"Boiler {n}", OPPORTUNITY=100 + n, STAGE_ID="PREPARATION", CONTACT_ID=contacts[n % 20])
        for n in range(100)
    ]
    hand_over(bridge, "deals-to-orders", deals)
    runs = bridge.settled_runs(100, timeout=120)
    assert Counter(run["status"] for run in runs) == {"succeeded": 100}, [r["error"] for r in runs if r["error"]][:3]

    made = items(target, orders)
    assert len(made) == 100
    by_deal = {int(item["xmlId"].rsplit(":", 1)[1]): item for item in made}
    assert sorted(by_deal) == sorted(deals)  # each item says which partner deal it is (XML_ID)
    first = by_deal[deals[7]]
    assert first["title"] == f"Boiler 7 (partner deal {deals[7]})" and first["opportunity"] == 107.0
    assert {item["stageId"] for item in made} == {f"{stage}:PREPARATION"}
    assert {item["categoryId"] for item in made} == {pipeline}
    target_contacts = result(target, "crm.contact.list", {"select": ["ID", "NAME"]})
    assert len(target_contacts) == 20  # each partner contact created once, whatever number of deals share it
    per_contact = Counter(item["contactId"] for item in made)
    assert sorted(per_contact.values()) == [5] * 20 and set(per_contact) == {int(c["ID"]) for c in target_contacts}
    # The item's ID went back into the deal as soon as it existed.
    assert result(source, "crm.deal.get", {"id": deals[7]})["UF_CRM_ORDER"] == str(first["id"])

    # Handed over again after a change: the same item is updated, nothing new is created.
    result(source, "crm.deal.update", {"id": deals[7], "fields": {"TITLE": "Boiler 7b"}})
    hand_over(bridge, "deals-to-orders", [deals[7], deals[8]])
    runs = bridge.settled_runs(102)
    assert [run["outcome"]["action"] for run in runs[-2:]] == ["updated", "skipped"]
    assert runs[-1]["outcome"]["note"].startswith("the same content was delivered by run")
    again = items(target, orders)
    assert len(again) == 100
    assert next(i for i in again if i["id"] == first["id"])["title"] == f"Boiler 7b (partner deal {deals[7]})"

    # The target's team closes the order: the partner's deal is won.
    target.call(
        "crm.item.update", {"entityTypeId": orders, "id": first["id"], "fields": {"stageId": f"{stage}:SUCCESS"}}
    )
    secret = status_secret(crypto.Keyring(tuple(crypto.parse_keys(KEY))), "deals-to-orders")
    with httpx.Client(timeout=10) as client:
        answer = client.get(f"{bridge.base_url}/bridge/hooks/deals-to-orders/status",
                            params={"secret": secret, "deal": f"DYNAMIC_{orders}_{first['id']}"})  # fmt: skip
        assert answer.status_code == 200, answer.text
    runs = bridge.settled_runs(103)
    assert runs[-1]["status"] == "succeeded", runs[-1]["error"]
    assert result(source, "crm.deal.get", {"id": deals[7]})["STAGE_ID"] == "WON"


ITEMS_TO_DEALS = """
portals:
  partner:
    webhook: ${SOURCE_WEBHOOK}
  acme:
    webhook: ${TARGET_WEBHOOK}
routes:
  orders-to-deals:
    source: partner
    source_entity: {smart_process: ORDERS_TYPE}
    target: acme
    triggers:
      hook:
        secret: ${HOOK_SECRET}
    deal:
      TITLE: "{{ item.TITLE }} (partner order {{ record.ID }})"
      OPPORTUNITY: {from: OPPORTUNITY, type: money}
      UF_CRM_PARTNER_STAGE: {from: STAGE_ID}
    contact:
      match: [phone]
      fields:
        NAME: {from: NAME}
        PHONE: {from: PHONE}
"""


@pytest.mark.timeout(120)
def test_items_of_a_process_become_deals_and_another_process_is_refused(
    portals: tuple[CloudPortal, CloudPortal], bridge_factory: Callable[..., BridgeService]
) -> None:
    source, target = portals
    orders, pipeline = new_process(source, "Orders")
    other, _ = new_process(source, "Warehouse")
    bridge = bridge_factory(ITEMS_TO_DEALS.replace("ORDERS_TYPE", str(orders)))
    result(target, "crm.deal.userfield.add", {"fields": {"FIELD_NAME": "PARTNER_STAGE", "USER_TYPE_ID": "string"}})
    phone = [{"VALUE": "+15552000001", "VALUE_TYPE": "WORK"}]
    contact = result(source, "crm.contact.add", {"fields": {"NAME": "Bob", "PHONE": phone}})
    made = [
        result(source, "crm.item.add", {"entityTypeId": orders, "fields": {
            "title": f"Order {n}", "opportunity": 50 + n, "contactId": contact}})["item"]
        for n in range(10)
    ]  # fmt: skip
    hand_over(bridge, "orders-to-deals", [f"DYNAMIC_{orders}_{item['id']}" for item in made[:5]])
    hand_over(bridge, "orders-to-deals", [str(item["id"]) for item in made[5:]])  # a bare id is the route's process's
    runs = bridge.settled_runs(10)
    assert Counter(run["status"] for run in runs) == {"succeeded": 10}, [r["error"] for r in runs if r["error"]][:3]
    deals = result(target, "crm.deal.list", {"select": ["*", "UF_*"], "order": {"ID": "ASC"}})
    assert len(deals) == 10
    origins = sorted(":".join(d["ORIGIN_ID"].split(":")[-2:]) for d in deals)  # <source>:<ENTITY>:<id>
    assert origins == sorted(f"DYNAMIC_{orders}:{item['id']}" for item in made)
    first = next(d for d in deals if d["ORIGIN_ID"].endswith(f":{made[0]['id']}"))
    assert first["TITLE"] == f"Order 0 (partner order {made[0]['id']})" and float(first["OPPORTUNITY"]) == 50.0
    assert first["UF_CRM_PARTNER_STAGE"] == made[0]["stageId"] and made[0]["stageId"].startswith(
        f"DT{orders}_{pipeline}:"
    )
    assert len(result(target, "crm.contact.list", {"select": ["ID"]})) == 1

    # An item of another process is not this route's record: refused at the door, nothing queued.
    with httpx.Client(timeout=10) as client:
        answer = client.get(f"{bridge.base_url}/bridge/hooks/orders-to-deals",
                            params={"secret": HOOK_SECRET, "deal": f"DYNAMIC_{other}_1"})  # fmt: skip
    assert answer.status_code == 400 and f"DYNAMIC_{orders}" in answer.text
    assert len(bridge.rows("SELECT id FROM runs WHERE kind = 'bridge'")) == 10


EVENTS = """
portals:
  partner:
    app: ${SOURCE_DOMAIN}
  acme:
    webhook: ${TARGET_WEBHOOK}
routes:
  orders-by-event:
    source: partner
    source_entity: {smart_process: Orders}
    target: acme
    triggers:
      events:
        stages: ["STAGE:PREPARATION"]
    deal:
      TITLE: "{{ item.TITLE }}"
"""


@pytest.mark.timeout(120)
def test_item_events_hand_over_the_named_process_items_only(
    portals: tuple[CloudPortal, CloudPortal], bridge_factory: Callable[..., BridgeService]
) -> None:
    source, target = portals
    warehouse, warehouse_pipeline = new_process(source, "Warehouse")
    orders, pipeline = new_process(source, "Orders")
    bridge = bridge_factory(EVENTS.replace("STAGE:", f"DT{orders}_{pipeline}:"))
    bridge.install()
    bindings = source.portal.world.event_bindings
    bridge.wait(lambda: {b["event"] for b in bindings} >= {"ONCRMDYNAMICITEMADD", "ONCRMDYNAMICITEMUPDATE"},
                "the item events bound")  # fmt: skip
    order = result(source, "crm.item.add", {"entityTypeId": orders, "fields": {"title": "Order by event"}})["item"]
    stock = result(source, "crm.item.add", {"entityTypeId": warehouse, "fields": {"title": "Not an order"}})["item"]
    preparation = {"stageId": f"DT{orders}_{pipeline}:PREPARATION"}
    result(source, "crm.item.update", {"entityTypeId": orders, "id": order["id"], "fields": preparation})
    other = {"stageId": f"DT{warehouse}_{warehouse_pipeline}:PREPARATION"}
    result(source, "crm.item.update", {"entityTypeId": warehouse, "id": stock["id"], "fields": other})
    bridge.wait(lambda: result(target, "crm.deal.list", {"select": ["ID", "TITLE"]}), "the order's deal")

    def settled() -> list[dict[str, Any]]:
        runs = bridge.rows("SELECT * FROM runs WHERE kind = 'bridge' ORDER BY id")
        documents = {r["document_id"][-1] for r in runs}  # an item's add and update may share one run (coalesced)
        both = documents == {f"DYNAMIC_{orders}_{order['id']}", f"DYNAMIC_{warehouse}_{stock['id']}"}
        return runs if both and all(r["status"] in ("succeeded", "dead") for r in runs) else []

    runs = bridge.wait(settled, "every item event's run")
    assert all(r["status"] == "succeeded" and r["trigger"] == "event" for r in runs), [r["error"] for r in runs]
    delivered = [r for r in runs if r["outcome"]["action"] == "created"]
    assert [r["document_id"][-1] for r in delivered] == [f"DYNAMIC_{orders}_{order['id']}"]
    notes = {r["document_id"][-1]: r["outcome"]["note"] for r in runs if r["outcome"]["action"] == "skipped"}
    assert notes[f"DYNAMIC_{warehouse}_{stock['id']}"] == (
        f"the item is of smart process {warehouse}, this route's is {orders}"
    )
    assert [d["TITLE"] for d in result(target, "crm.deal.list", {"select": ["TITLE"]})] == ["Order by event"]


ROBOT = """
portals:
  partner:
    app: ${SOURCE_DOMAIN}
  acme:
    webhook: ${TARGET_WEBHOOK}
routes:
  orders-by-robot:
    source: partner
    source_entity: {smart_process: Orders}
    target: acme
    triggers:
      robot: true
    deal:
      TITLE: "{{ item.TITLE }}"
"""


@pytest.mark.timeout(120)
def test_the_bridge_robot_on_an_items_stage_hands_it_over_and_its_workflow_hears_the_deal(
    portals: tuple[CloudPortal, CloudPortal], bridge_factory: Callable[..., BridgeService]
) -> None:
    source, target = portals
    orders, pipeline = new_process(source, "Orders")
    bridge = bridge_factory(ROBOT)
    bridge.install()
    bridge.wait(lambda: bridge.rows("SELECT 1 FROM robot_registrations WHERE code = 'b24bridge_bridge_deal'"), "sync")
    stage = f"DT{orders}_{pipeline}:PREPARATION"
    robot_rule(bridge, "orders-by-robot", stage, entity=f"DYNAMIC_{orders}", category_id=pipeline)
    order = result(source, "crm.item.add", {"entityTypeId": orders, "fields": {"title": "Robot order"}})["item"]
    result(source, "crm.item.update", {"entityTypeId": orders, "id": order["id"], "fields": {"stageId": stage}})
    [workflow] = bridge.wait(
        lambda: [w for w in source.control("GET", "/_sandbox/workflows")["workflows"] if w["status"] != "running"],
        "the workflow's answer",
    )
    assert workflow["status"] == "completed", workflow
    assert workflow["document_id"][-1] == f"DYNAMIC_{orders}_{order['id']}"
    [deal] = result(target, "crm.deal.list", {"select": ["ID", "TITLE"]})
    assert deal["TITLE"] == "Robot order" and int(workflow["return_values"]["target_deal_id"]) == int(deal["ID"])
    [run] = bridge.settled_runs(1)
    assert run["trigger"] == "robot" and run["status"] == "succeeded" and run["answered_at"] is not None
