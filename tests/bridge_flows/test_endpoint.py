"""Your own system as a target (issue 18): deals handed over to an HTTPS receiver that checks every Standard Webhooks
signature and fails a tenth of its answers; each is applied once, and the receiver's ids come back to the deals."""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from b24bridge.sandbox.receiver import ReceiverState, create_receiver_app
from tests.bridge_flows.conftest import HOOK_SECRET, BridgeService, result
from tests.livehttp import LiveServer, serve

NEW_SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()

ROUTES = """
portals:
  partner:
    webhook: ${SOURCE_WEBHOOK}
  erp:
    endpoint: ${ERP_URL}
    secrets:
      - ${ERP_NEW_SECRET}
      - ${ERP_OLD_SECRET}
routes:
  deals-to-erp:
    source: partner
    target: erp
    triggers:
      hook:
        secret: ${HOOK_SECRET}
    deal:
      TITLE: "{{ deal.TITLE }}"
      AMOUNT: {from: OPPORTUNITY, type: money}
    contact:
      fields:
        NAME: {from: NAME}
    products: true
    status_back:
      fields:
        UF_CRM_ERP_ORDER: "{{ target.ID }}"
"""


@pytest.fixture
def receiver() -> Iterator[tuple[LiveServer, ReceiverState]]:
    # Mid-rotation: the receiver still knows only the old secret; b24bridge signs with both.
    state = ReceiverState([OLD_SECRET], error_rate=0.05, slow_rate=0.05, slow_seconds=1.5, seed=18)
    server = LiveServer(lambda _port: create_receiver_app(state))
    for live in serve(server):
        yield live, state


def _start(bridge_factory: Callable[..., BridgeService], url: str) -> BridgeService:
    os.environ["ERP_URL"] = url
    os.environ["ERP_NEW_SECRET"], os.environ["ERP_OLD_SECRET"] = NEW_SECRET, OLD_SECRET
    return bridge_factory(
        ROUTES,
        endpoint_allow_networks="127.0.0.1",
        endpoint_timeout=1.0,
        retry_schedule="0.2s,0.5s,1s,1s,1s,1s,1s,1s",
    )


def _deals(portal: Any, count: int, contact: int) -> list[int]:
    made: list[int] = []
    for start in range(0, count, 50):
        commands = {}
        for n in range(start, min(count, start + 50)):
            fields: dict[str, str | int] = {
                "fields[TITLE]": f"Order {n}",
                "fields[OPPORTUNITY]": 10 + n,
                "fields[CONTACT_ID]": contact,
            }
            commands[f"d{n}"] = f"crm.deal.add?{httpx.QueryParams(fields)}"
        batch = result(portal, "batch", {"halt": 1, "cmd": commands})
        made += [int(batch["result"][k]) for k in commands]
    return made


@pytest.mark.timeout(300)
def test_five_hundred_deals_reach_a_flaky_receiver_once_each_and_its_ids_come_back(
    bridge_factory: Callable[..., BridgeService], receiver: tuple[LiveServer, ReceiverState]
) -> None:
    live, state = receiver
    bridge = _start(bridge_factory, f"{live.base_url}/b24/orders?tenant=acme")
    source = bridge.source
    result(source, "crm.deal.userfield.add", {"fields": {"FIELD_NAME": "ERP_ORDER", "USER_TYPE_ID": "string"}})
    contact = result(source, "crm.contact.add", {"fields": {"NAME": "Ann"}})
    deals = _deals(source, 500, contact)
    with httpx.Client(timeout=10) as client:
        for deal in deals:
            answer = client.get(f"{bridge.base_url}/bridge/hooks/deals-to-erp",
                                params={"secret": HOOK_SECRET, "deal": str(deal)})  # fmt: skip
            assert answer.status_code == 200, answer.text
    runs = bridge.settled_runs(500, timeout=240)
    assert Counter(run["status"] for run in runs) == {"succeeded": 500}, [r["error"] for r in runs if r["error"]][:3]

    # The faults happened, and every signature checked (with the old secret: both were sent).
    assert state.errors_sent > 0 and state.slow_sent > 0
    assert state.refused_signatures == 0
    # Once in effect: one record per deal, each applied from exactly one message (retries carried its webhook-id).
    assert len(state.records) == 500
    assert all(record["versions"] == 1 for record in state.records.values())
    assert len(state.applied) == 500
    by_deal = {int(r["last"]["source"]["id"]): r for r in state.records.values()}
    assert sorted(by_deal) == sorted(deals)
    sent = by_deal[deals[7]]["last"]
    assert sent["record"] == {"TITLE": "Order 7", "AMOUNT": "17.00"}
    assert sent["contact"] == {"NAME": "Ann"} and sent["source"]["entity"] == "deal"
    assert sent["type"] == "b24bridge.handover" and sent["previous_id"] is None

    # The receiver's ids are in the source deals, and in the run log.
    for deal in (deals[0], deals[7], deals[-1]):
        assert result(source, "crm.deal.get", {"id": deal})["UF_CRM_ERP_ORDER"] == by_deal[deal]["id"]
    refs = {run["outcome"]["target_ref"] for run in runs}
    assert refs == {record["id"] for record in state.records.values()}
    calls = bridge.rows("SELECT method, status FROM run_calls WHERE method LIKE 'POST %%'")
    assert Counter(c["status"] for c in calls)["ok"] == 500
    assert Counter(c["status"] for c in calls)["uncertain"] >= state.slow_sent


@pytest.mark.timeout(120)
def test_an_unchanged_deal_is_not_sent_again_and_a_changed_one_carries_the_receivers_id(
    bridge_factory: Callable[..., BridgeService], receiver: tuple[LiveServer, ReceiverState]
) -> None:
    live, state = receiver
    state.error_rate = state.slow_rate = 0.0
    bridge = _start(bridge_factory, f"{live.base_url}/b24/orders")
    source = bridge.source
    [deal] = _deals(source, 1, result(source, "crm.contact.add", {"fields": {"NAME": "Bo"}}))
    hook = f"{bridge.base_url}/bridge/hooks/deals-to-erp"
    with httpx.Client(timeout=10) as client:
        client.get(hook, params={"secret": HOOK_SECRET, "deal": str(deal)}).raise_for_status()
        bridge.settled_runs(1)
        # The same content later (past the dedupe window's reach: another run) is not sent again.
        with psycopg.connect(bridge.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM bridge_dedupe")
        client.get(hook, params={"secret": HOOK_SECRET, "deal": str(deal)}).raise_for_status()
        runs = bridge.settled_runs(2)
        assert runs[1]["outcome"]["action"] == "unchanged" and state.requests == 1
        result(source, "crm.deal.update", {"id": deal, "fields": {"TITLE": "Order 0, amended"}})
        client.get(hook, params={"secret": HOOK_SECRET, "deal": str(deal)}).raise_for_status()
        runs = bridge.settled_runs(3)
    [record] = state.records.values()
    assert runs[2]["outcome"]["action"] == "updated" and record["versions"] == 2
    assert record["last"]["previous_id"] == record["id"] == "ERP-1"
    assert record["last"]["record"]["TITLE"] == "Order 0, amended"


def test_a_refusal_is_dead_at_once_with_the_endpoints_words_and_a_replay_delivers_it_once(
    bridge_factory: Callable[..., BridgeService], receiver: tuple[LiveServer, ReceiverState]
) -> None:
    from tests.bridge_flows.test_replay import _cli

    live, state = receiver
    state.error_rate = state.slow_rate = 0.0
    state.refuse_status = 400
    bridge = _start(bridge_factory, f"{live.base_url}/b24/orders")
    source = bridge.source
    result(source, "crm.deal.userfield.add", {"fields": {"FIELD_NAME": "ERP_ORDER", "USER_TYPE_ID": "string"}})
    [deal] = _deals(source, 1, result(source, "crm.contact.add", {"fields": {"NAME": "Cy"}}))
    with httpx.Client(timeout=10) as client:
        answer = client.get(
            f"{bridge.base_url}/bridge/hooks/deals-to-erp", params={"secret": HOOK_SECRET, "deal": str(deal)}
        )
        assert answer.status_code == 200, answer.text
    [run] = bridge.settled_runs(1)
    assert run["status"] == "dead" and run["attempts"] == 1, "a 400 is not retried"
    assert run["error"] == 'endpoint erp answered 400: {"error":"record refused: TITLE is required"}'
    assert state.requests == 1 and not state.records

    state.refuse_status = None
    replayed = _cli(bridge, "runs", "replay", "--status", "dead", "--route", "deals-to-erp")
    assert replayed.returncode == 0, replayed.stderr
    [run] = bridge.settled_runs(1)
    assert run["status"] == "succeeded", run["error"]
    [record] = state.records.values()
    assert record["versions"] == 1 and result(source, "crm.deal.get", {"id": deal})["UF_CRM_ERP_ORDER"] == record["id"]
