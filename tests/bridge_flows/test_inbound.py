"""Your own system as a source (issue 18): ``POST /api/inbound/{route}`` makes leads in a portal, exactly once per
Idempotency-Key, through the route's mapping."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.bridge_flows.conftest import BridgeService, result
from tests.bridge_flows.test_leads import _all
from tests.door.test_schema import DOCUMENTED, OPERATIONS
from tests.fuzzing import fuzz_operation

TOKEN = "erp-inbound-token-0123456789abcdef0123"
ROUTES = """
portals:
  acme:
    webhook: ${TARGET_WEBHOOK}
routes:
  erp-leads:
    source: inbound
    target: acme
    target_entity: lead
    triggers:
      inbound: {token: "${ERP_TOKEN}"}
    lead:
      TITLE: "{{ record.title }}"
      OPPORTUNITY: {from: record.amount, type: money}
    contact:
      fields:
        NAME: {from: contact.name}
"""


def _start(bridge_factory: Callable[..., BridgeService]) -> BridgeService:
    os.environ["ERP_TOKEN"] = TOKEN
    return bridge_factory(ROUTES)


def _body(n: int) -> dict[str, Any]:
    return {
        "record": {"title": f"Lead {n}", "amount": 100 + n},
        "contact": {"id": f"C{n % 10}", "name": f"Ann {n % 10}"},
    }


def _post(
    client: httpx.Client, bridge: BridgeService, key: str | None, body: Any, token: str = TOKEN
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **({"Idempotency-Key": key} if key is not None else {})}
    return client.post(f"{bridge.base_url}/api/inbound/erp-leads", json=body, headers=headers)


@pytest.mark.timeout(300)
def test_five_hundred_posts_with_fifty_repeated_keys_make_four_hundred_fifty_leads(
    bridge_factory: Callable[..., BridgeService],
) -> None:
    bridge = _start(bridge_factory)
    # 450 keys; the first 50 of them sent a second time, interleaved, sixteen POSTs at a time.
    sends = [(f"key-{n}", n) for n in range(450)]
    sends[100:100] = [(f"key-{n}", n) for n in range(50)]
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda send: _post(client, bridge, send[0], _body(send[1])), sends))
    assert len(answers) == 500
    assert Counter(a.status_code for a in answers) == {200: 500}, [a.text for a in answers if a.status_code != 200][:3]
    by_key: dict[str, set[int]] = {}
    for (key, _), answer in zip(sends, answers, strict=True):
        by_key.setdefault(key, set()).add(int(answer.json()["id"]))
    assert all(len(ids) == 1 for ids in by_key.values()), "a repeated key answers with the first one's lead"

    leads = _all(bridge.target, "crm.lead.list", ["ID", "TITLE", "OPPORTUNITY", "CONTACT_ID"])
    assert len(leads) == 450
    assert sorted(int(lead["ID"]) for lead in leads) == sorted(i for ids in by_key.values() for i in ids)
    lead_7 = next(lead for lead in leads if int(lead["ID"]) in by_key["key-7"])
    assert lead_7["TITLE"] == "Lead 7" and float(lead_7["OPPORTUNITY"]) == 107.0
    contacts = _all(bridge.target, "crm.contact.list", ["ID", "NAME"])
    assert len(contacts) == 10, "each contact of your system created once"
    runs = bridge.rows("SELECT status, trigger FROM runs")
    assert Counter((r["trigger"], r["status"]) for r in runs) == {("inbound", "succeeded"): 450}


def test_refusals_name_what_is_wrong_and_an_id_updates_what_it_created(
    bridge_factory: Callable[..., BridgeService],
) -> None:
    bridge = _start(bridge_factory)
    with httpx.Client(timeout=30) as client:
        assert _post(client, bridge, "k1", _body(1), token="wrong" * 8).status_code == 401
        missing = _post(client, bridge, None, _body(1))
        assert missing.status_code == 400 and "Idempotency-Key" in missing.json()["error"]
        assert _post(client, bridge, "k1", {"title": "no record"}).status_code == 400
        nul = _post(client, bridge, "k1", {"record": {"title": "a\u0000b"}})
        assert nul.status_code == 400 and "body.record.title" in nul.json()["error"]
        unknown = client.post(f"{bridge.base_url}/api/inbound/nope", json=_body(1),
                              headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k"})  # fmt: skip
        assert unknown.status_code == 404

        first = _post(client, bridge, "k1", {"id": "ERP-1", "record": {"title": "First", "amount": 5}})
        assert first.status_code == 200 and first.json()["action"] == "created", first.text
        lead_id = int(first.json()["id"])
        other = _post(client, bridge, "k1", {"id": "ERP-1", "record": {"title": "Changed", "amount": 5}})
        assert other.status_code == 422 and "another body" in other.json()["error"]
        again = _post(client, bridge, "k2", {"id": "ERP-1", "record": {"title": "Renamed", "amount": 5}})
        assert again.status_code == 200 and int(again.json()["id"]) == lead_id and again.json()["action"] == "updated"
        assert result(bridge.target, "crm.lead.get", {"id": lead_id})["TITLE"] == "Renamed"
        status = client.get(f"{bridge.base_url}/api/inbound/erp-leads/runs/{first.json()['run_id']}",
                            headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert status.status_code == 200 and int(status.json()["id"]) == lead_id


INBOUND_OPERATIONS = [op for op in OPERATIONS if op.path.startswith("/api/inbound")]


@pytest.mark.timeout(300)
def test_the_inbound_api_answers_fuzzed_requests_with_its_token_with_no_5xx(
    bridge_factory: Callable[..., BridgeService],
) -> None:
    """schemathesis past the token check: generated bodies, keys and run ids on the real route, with its token."""
    bridge = _start(bridge_factory)
    assert len(INBOUND_OPERATIONS) == 2

    def call(case: Any) -> None:
        case.path_parameters = {**(case.path_parameters or {}), "route": "erp-leads"}
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
        case.call_and_validate(base_url=bridge.base_url, checks=DOCUMENTED)

    for operation in INBOUND_OPERATIONS:
        fuzz_operation(operation, call, examples=25)
    # Some generated POSTs got past the checks: stored and delivered, not only refused.
    assert bridge.rows("SELECT count(*) AS n FROM runs WHERE trigger = 'inbound'")[0]["n"] > 0
