"""Status back: the target's team moves the deal; the source shows the mapped stage and the target deal's ID/URL."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from b24bridge.bridge.intake import status_secret
from b24bridge.portals import crypto
from tests.bridge_flows.conftest import KEY, BridgeService, move, new_deal, result, webhook_rule

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
      TITLE: "{{ deal.TITLE }}"
      STAGE_ID: {from: STAGE_ID, map: {PREPARATION: NEW}}
    status_back:
      stages: {WON: WON, LOSE: LOSE}
      fields:
        UF_CRM_ACME_ID: "{{ target.ID }}"
        UF_CRM_ACME_URL: "{{ target.url }}"
"""


def _status_url(bridge: BridgeService) -> str:
    secret = status_secret(crypto.Keyring(tuple(crypto.parse_keys(KEY))), "partner-to-acme")
    return f"{bridge.base_url}/bridge/hooks/partner-to-acme/status?secret={secret}&deal={{=Document:ID}}"


def test_the_target_moves_the_deal_and_the_source_shows_it(bridge_factory: Callable[..., BridgeService]) -> None:
    bridge = bridge_factory(ROUTES)
    source, target = bridge.source, bridge.target
    for name in ("ACME_ID", "ACME_URL"):
        result(source, "crm.deal.userfield.add", {"fields": {"FIELD_NAME": name, "USER_TYPE_ID": "string"}})
    webhook_rule(source, bridge.hook_url("partner-to-acme"))
    webhook_rule(target, _status_url(bridge), stage="WON")
    deal_id = new_deal(source, TITLE="Shared")
    move(source, deal_id)
    [delivery] = bridge.settled_runs(1)
    target_id = delivery["outcome"]["values"]["target_deal_id"]
    # Right after the hand-over the partner already sees the target deal.
    shown = result(source, "crm.deal.get", {"id": deal_id})
    assert shown["UF_CRM_ACME_ID"] == str(target_id)
    assert shown["UF_CRM_ACME_URL"] == f"{target.base_url}/crm/deal/details/{target_id}/"

    move(target, target_id, "WON")
    runs = bridge.settled_runs(2)
    assert [r["trigger"] for r in runs] == ["hook", "status"] and runs[1]["status"] == "succeeded", runs[1]["error"]
    assert result(source, "crm.deal.get", {"id": deal_id})["STAGE_ID"] == "WON"
    assert runs[1]["outcome"]["changed"] == ["STAGE_ID"]

    # The same status again (the rule fired twice, say) changes nothing.
    answer = httpx.post(_status_url(bridge).replace("{=Document:ID}", str(target_id)))
    assert answer.status_code == 200, answer.text
    runs = bridge.settled_runs(3)
    assert runs[2]["outcome"]["action"] == "unchanged"
    calls = bridge.rows("SELECT method FROM run_calls WHERE run_id = %s", runs[2]["id"])
    assert [c["method"] for c in calls] == ["crm.deal.get"]  # read the target; nothing written to the source


def test_a_status_hook_with_a_wrong_secret_stores_nothing(bridge_factory: Callable[..., BridgeService]) -> None:
    bridge = bridge_factory(ROUTES)
    answer = httpx.post(f"{bridge.base_url}/bridge/hooks/partner-to-acme/status?secret=nope&deal=1")
    assert answer.status_code == 403 and bridge.rows("SELECT * FROM runs") == []
