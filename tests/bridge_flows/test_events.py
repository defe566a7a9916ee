"""Events keep a deal in sync after its first hand-over: stage changes arrive in order, the target's WON comes back
to the source, and nothing b24bridge wrote bounces back as a new transfer."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from b24bridge.bridge.intake import status_secret
from b24bridge.portals import crypto
from tests.bridge_flows.conftest import KEY, BridgeService, move, new_deal, result, webhook_rule

ROUTES = """
portals:
  partner:
    app: ${SOURCE_DOMAIN}
  acme:
    webhook: ${TARGET_WEBHOOK}
routes:
  partner-to-acme:
    source: partner
    target: acme
    triggers:
      events:
        stages: [PREPARATION, EXECUTING, FINAL_INVOICE]
    deal:
      TITLE: "{{ deal.TITLE }}"
      STAGE_ID: {from: STAGE_ID, map: {PREPARATION: NEW, EXECUTING: PREPAYMENT_INVOICE, FINAL_INVOICE: EXECUTING}}
    status_back:
      stages: {WON: WON}
"""


def test_stages_arrive_in_order_and_won_comes_back_without_bouncing(
    bridge_factory: Callable[..., BridgeService],
) -> None:
    bridge = bridge_factory(ROUTES)
    source, target = bridge.source, bridge.target
    bridge.install()
    member = source.info["member_id"]
    bridge.wait(lambda: len([b for b in source.portal.world.event_bindings if b["event"].startswith("ONCRMDEAL")]) == 2,
                "the deal events bound")  # fmt: skip
    secret = status_secret(crypto.Keyring(tuple(crypto.parse_keys(KEY))), "partner-to-acme")
    webhook_rule(target, f"{bridge.base_url}/bridge/hooks/partner-to-acme/status?secret={secret}&deal={{=Document:ID}}",
                 stage="WON")  # fmt: skip
    deal_id = new_deal(source, TITLE="Synced")
    for stage in ("PREPARATION", "EXECUTING", "FINAL_INVOICE"):
        move(source, deal_id, stage)

    def settled() -> bool:
        runs = bridge.rows("SELECT status FROM runs WHERE kind = 'bridge'")
        return (
            bool(runs)
            and all(r["status"] in ("succeeded", "dead") for r in runs)
            and bool(result(target, "crm.deal.list", {"select": ["STAGE_ID"]}))
            and result(target, "crm.deal.list", {"select": ["STAGE_ID"]})[0]["STAGE_ID"] == "EXECUTING"
        )

    bridge.wait(settled, "the last stage to arrive")
    runs = bridge.rows("SELECT * FROM runs WHERE kind = 'bridge' ORDER BY id")
    assert all(r["member_id"] == member and r["trigger"] == "event" for r in runs)
    assert all(r["status"] == "succeeded" for r in runs), [r["error"] for r in runs]
    # One deal's runs ran one at a time, in the order the changes came in.
    for before, after in itertools.pairwise(runs):
        assert before["finished_at"] <= after["started_at"]
    [target_deal] = result(target, "crm.deal.list", {"select": ["ID", "STAGE_ID"]})

    writes_before = _target_writes(bridge)
    move(target, int(target_deal["ID"]), "WON")
    bridge.wait(lambda: result(source, "crm.deal.get", {"id": deal_id})["STAGE_ID"] == "WON", "WON in the source")

    # Our own update of the source sends an event back; that run reads the deal and leaves it (WON is no trigger).
    # The echo reaches the door after the status run has finished, so wait for its run, not only for a quiet queue.
    def echo_settled() -> list[dict[str, Any]] | None:
        later = bridge.rows(
            "SELECT trigger, status, outcome FROM runs WHERE kind = 'bridge' AND id > %s ORDER BY id", runs[-1]["id"]
        )
        echoed = any(r["trigger"] == "event" for r in later)
        return later if echoed and all(r["status"] in ("succeeded", "dead") for r in later) else None

    later: list[dict[str, Any]] = bridge.wait(echo_settled, "the echo's run")
    assert next(r["trigger"] for r in later) == "status"
    assert all(r["outcome"]["action"] in ("updated", "skipped", "unchanged") for r in later)
    assert _target_writes(bridge) == writes_before, "nothing went back to the target"
    assert result(target, "crm.deal.get", {"id": target_deal["ID"]})["STAGE_ID"] == "WON"


def _target_writes(bridge: BridgeService) -> int:
    rows = bridge.rows("SELECT count(*) AS n FROM run_calls WHERE method IN ('crm.deal.add', 'crm.deal.update')"
                       " AND run_id IN (SELECT id FROM runs WHERE trigger <> 'status')")  # fmt: skip
    return int(rows[0]["n"])
