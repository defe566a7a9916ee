"""The webhook-only source: the source's outbound-webhook rule calls b24bridge with a per-route secret; b24bridge
reads the deal through the source's incoming webhook and writes it to the target through the target's."""

from __future__ import annotations

from collections.abc import Callable

from tests.bridge_flows.conftest import BridgeService, move, new_deal, result, webhook_rule

ROUTES = """
portals:
  partner:
    webhook: ${SOURCE_WEBHOOK}
  acme:
    webhook: ${TARGET_WEBHOOK}
routes:
  partner-to-acme:
    source: partner
    target: acme
    triggers:
      hook:
        secret: ${HOOK_SECRET}
    deal:
      TITLE: "{{ deal.TITLE }} (partner)"
      OPPORTUNITY: {from: OPPORTUNITY, type: money}
      CURRENCY_ID: {from: CURRENCY_ID, default: USD}
      COMMENTS: "Partner deal {{ deal.ID }}"
    contact:
      match: [phone, email]
      fields:
        NAME: {from: NAME}
        LAST_NAME: {from: LAST_NAME}
        PHONE: {from: PHONE}
        EMAIL: {from: EMAIL}
    products: true
"""


def test_a_deal_moved_in_the_source_arrives_in_the_target(bridge_factory: Callable[..., BridgeService]) -> None:
    bridge = bridge_factory(ROUTES)
    source, target = bridge.source, bridge.target
    webhook_rule(source, bridge.hook_url("partner-to-acme"))
    contact = result(
        source,
        "crm.contact.add",
        {"fields": {"NAME": "Ann", "LAST_NAME": "Lee", "PHONE": [{"VALUE": "+15551234567", "VALUE_TYPE": "WORK"}]}},
    )
    deal_id = new_deal(source, TITLE="Order 7", OPPORTUNITY=1500.5, CURRENCY_ID="EUR", CONTACT_ID=contact)
    result(
        source,
        "crm.deal.productrows.set",
        {
            "id": deal_id,
            "rows": [{"PRODUCT_NAME": "Widget", "PRICE": 100, "QUANTITY": 3}, {"PRODUCT_NAME": "Gadget", "PRICE": 50}],
        },
    )
    move(source, deal_id)
    [run] = bridge.settled_runs(1)
    assert run["status"] == "succeeded", run["error"]
    [deal] = result(target, "crm.deal.list", {"select": ["*"]})
    # The rows make the deal's total (in both portals): 3 x 100 + 50.
    assert deal["TITLE"] == "Order 7 (partner)" and float(deal["OPPORTUNITY"]) == 350.0
    assert deal["CURRENCY_ID"] == "EUR" and deal["COMMENTS"] == f"Partner deal {deal_id}"
    assert deal["ORIGINATOR_ID"] == "b24bridge" and deal["ORIGIN_ID"].endswith(f":DEAL:{deal_id}")
    [copied] = result(target, "crm.contact.list", {"select": ["ID", "NAME", "LAST_NAME", "PHONE"]})
    assert int(deal["CONTACT_ID"]) == int(copied["ID"]) and copied["NAME"] == "Ann"
    assert [p["VALUE"] for p in copied["PHONE"]] == ["+15551234567"]
    rows = result(target, "crm.deal.productrows.get", {"id": deal["ID"]})
    assert [(r["PRODUCT_NAME"], float(r["PRICE"]), float(r["QUANTITY"])) for r in rows] == [
        ("Widget", 100.0, 3.0), ("Gadget", 50.0, 1.0)]  # fmt: skip
    assert run["outcome"]["values"]["target_deal_id"] == int(deal["ID"])


def test_a_wrong_secret_stores_nothing(bridge_factory: Callable[..., BridgeService]) -> None:
    import httpx

    bridge = bridge_factory(ROUTES)
    deal_id = new_deal(bridge.source)
    for secret in ("wrong", "", "hook-secret-0123456789abcdeX"):
        answer = httpx.post(f"{bridge.base_url}/bridge/hooks/partner-to-acme?secret={secret}&deal={deal_id}")
        assert answer.status_code == 403 and answer.json() == {"error": "unknown route or wrong secret"}
    answer = httpx.post(f"{bridge.base_url}/bridge/hooks/no-such-route?secret=x&deal={deal_id}")
    assert answer.status_code == 404
    assert (
        bridge.rows("SELECT * FROM runs") == []
        and bridge.rows("SELECT * FROM procrastinate_jobs WHERE task_name = 'bridge:run'") == []
    )
    assert result(bridge.target, "crm.deal.list") == []


def test_the_same_deal_again_updates_only_what_changed(bridge_factory: Callable[..., BridgeService]) -> None:
    bridge = bridge_factory(ROUTES)
    source, target = bridge.source, bridge.target
    webhook_rule(source, bridge.hook_url("partner-to-acme"))
    deal_id = new_deal(source, TITLE="First", OPPORTUNITY=10)
    move(source, deal_id)
    bridge.settled_runs(1)
    result(source, "crm.deal.update", {"id": deal_id, "fields": {"TITLE": "Second", "STAGE_ID": "NEW"}})
    move(source, deal_id)
    runs = bridge.settled_runs(2)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert runs[1]["outcome"]["action"] == "updated" and runs[1]["outcome"]["changed"] == ["TITLE"]
    [deal] = result(target, "crm.deal.list", {"select": ["ID", "TITLE"]})
    assert deal["TITLE"] == "Second (partner)"
    calls = bridge.rows("SELECT method FROM run_calls WHERE run_id = %s ORDER BY id", runs[1]["id"])
    assert "crm.deal.add" not in [c["method"] for c in calls]


def test_with_redis_configured_but_down_deliveries_go_on(bridge_factory: Callable[..., BridgeService]) -> None:
    """Redis is a fast path and a shared budget, never a dependency: the same delivery with Redis unreachable."""
    from tests.livehttp import free_socket

    sock = free_socket()
    dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    sock.close()
    bridge = bridge_factory(ROUTES, redis_url=dead)
    webhook_rule(bridge.source, bridge.hook_url("partner-to-acme"))
    deal_id = new_deal(bridge.source, TITLE="Order 8")
    move(bridge.source, deal_id)
    [run] = bridge.settled_runs(1)
    assert run["status"] == "succeeded", run["error"]
    [deal] = result(bridge.target, "crm.deal.list", {"select": ["TITLE"]})
    assert deal["TITLE"] == "Order 8 (partner)"


def test_a_deal_without_contact_or_products_arrives_alone(bridge_factory: Callable[..., BridgeService]) -> None:
    """The source read finds the contact through the deal's own CONTACT_ID in the same request: a deal that has
    none must not pick up someone else's contact, whatever an empty filter value reads in the source."""
    bridge = bridge_factory(ROUTES)
    source, target = bridge.source, bridge.target
    webhook_rule(source, bridge.hook_url("partner-to-acme"))
    for name in ("Ann", "Bob"):  # contacts the deal does not have
        result(
            source,
            "crm.contact.add",
            {"fields": {"NAME": name, "PHONE": [{"VALUE": "+1555000111", "VALUE_TYPE": "WORK"}]}},
        )
    deal_id = new_deal(source, TITLE="Lonely")
    move(source, deal_id)
    [run] = bridge.settled_runs(1)
    assert run["status"] == "succeeded", run["error"]
    [deal] = result(target, "crm.deal.list", {"select": ["ID", "CONTACT_ID", "TITLE"]})
    assert deal["TITLE"] == "Lonely (partner)" and not _id_of(deal["CONTACT_ID"])
    assert result(target, "crm.contact.list", {"select": ["ID"]}) == []
    assert result(target, "crm.deal.productrows.get", {"id": deal["ID"]}) == []
    # The source was read by one chain: the deal, its rows, then its contact looked up by the deal's CONTACT_ID.
    calls = bridge.rows("SELECT method FROM run_calls WHERE run_id = %s ORDER BY id", run["id"])
    assert [c["method"] for c in calls][:3] == ["crm.deal.get", "crm.deal.productrows.get", "crm.contact.list"]


def _id_of(value: object) -> int:
    return int(str(value or 0))


def test_a_record_the_database_cannot_store_ends_dead_with_the_reason(
    bridge_factory: Callable[..., BridgeService],
) -> None:
    """A deal whose title holds a NUL byte (a portal keeps it; PostgreSQL's text and jsonb cannot): the run is dead
    with the database's own words at once, not tried again every two seconds for ever."""
    bridge = bridge_factory(ROUTES)
    webhook_rule(bridge.source, bridge.hook_url("partner-to-acme"))
    move(bridge.source, new_deal(bridge.source, TITLE="Order\x007"))
    [run] = bridge.settled_runs(1, timeout=20)
    assert run["status"] == "dead" and run["attempts"] == 1, (run["status"], run["attempts"], run["error"])
    assert run["error"].startswith("the database refused what this run stores: "), run["error"]
