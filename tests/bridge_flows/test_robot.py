"""The bridge robot in a source where b24bridge is installed: the workflow gets the target deal's ID and URL."""

from __future__ import annotations

from collections.abc import Callable

from tests.bridge_flows.conftest import BridgeService, new_deal, result, robot_rule, wait_workflow

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
      robot: true
    deal:
      TITLE: "{{ deal.TITLE }}"
      STAGE_ID: {from: STAGE_ID, map: {PREPARATION: NEW, EXECUTING: PREPAYMENT_INVOICE}}
      COMMENTS: {const: "from the partner"}
"""


def _started(bridge: BridgeService, deal_id: int) -> str:
    moved = bridge.source.control("POST", f"/_sandbox/deals/{deal_id}/stage", {"stage_id": "PREPARATION"})
    [workflow_id] = moved["workflows"]
    return str(workflow_id)


def test_the_robot_hands_the_deal_over_and_gets_its_id(bridge_factory: Callable[..., BridgeService]) -> None:
    bridge = bridge_factory(ROUTES)
    bridge.install()
    bridge.wait(lambda: bridge.rows("SELECT 1 FROM robot_registrations WHERE code = 'b24bridge_bridge_deal'"), "sync")
    robot_rule(bridge, "partner-to-acme")
    deal_id = new_deal(bridge.source, TITLE="Robot order")
    workflow = wait_workflow(bridge.source, _started(bridge, deal_id))
    assert workflow["status"] == "completed", workflow
    [deal] = result(bridge.target, "crm.deal.list", {"select": ["ID", "TITLE", "STAGE_ID", "COMMENTS"]})
    assert (deal["TITLE"], deal["STAGE_ID"], deal["COMMENTS"]) == ("Robot order", "NEW", "from the partner")
    values = workflow["return_values"]
    assert int(values["target_deal_id"]) == int(deal["ID"])
    assert values["target_deal_url"] == f"{bridge.target.base_url}/crm/deal/details/{deal['ID']}/"
    [run] = bridge.settled_runs(1)
    assert run["trigger"] == "robot" and run["answered_at"] is not None
    # The answer went before the end was stored, and both were one write (one statement: the same now()).
    assert run["answered_at"] == run["finished_at"], (run["answered_at"], run["finished_at"])


def test_a_robot_naming_no_route_gets_the_error(bridge_factory: Callable[..., BridgeService]) -> None:
    bridge = bridge_factory(ROUTES)
    bridge.install()
    bridge.wait(lambda: bridge.rows("SELECT 1 FROM robot_registrations WHERE code = 'b24bridge_bridge_deal'"), "sync")
    robot_rule(bridge, "no-such-route")
    workflow = wait_workflow(bridge.source, _started(bridge, new_deal(bridge.source)))
    [answer] = [line for line in workflow["log"] if line["source"] == "bizproc.event.send"]
    assert answer["message"] == "b24bridge: no route 'no-such-route': routes are partner-to-acme"
    [run] = bridge.settled_runs(1)
    assert run["status"] == "dead" and run["answered_at"] is not None
    assert result(bridge.target, "crm.deal.list") == []
