"""A mapping that cannot be applied ends the run dead with a clear reason; once the route file is fixed,
``b24bridge runs replay --status dead`` delivers it, once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from tests.bridge_flows.conftest import HOOK_SECRET, KEY, BridgeService, move, new_deal, result, webhook_rule

BROKEN = """
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
      STAGE_ID: {from: STAGE_ID, map: {EXECUTING: PREPAYMENT_INVOICE}}
"""
FIXED = BROKEN.replace("{EXECUTING: PREPAYMENT_INVOICE}", "{EXECUTING: PREPAYMENT_INVOICE, PREPARATION: NEW}")


def _cli(bridge: BridgeService, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24BRIDGE_")}
    env |= {
        "B24BRIDGE_DATABASE_URL": bridge.database_url,
        "B24BRIDGE_DATA_DIR": str(bridge.data_dir),
        "B24BRIDGE_ENCRYPTION_KEYS": KEY,
        "B24BRIDGE_ROUTES": str(bridge.data_dir / "routes.yaml"),
        "B24BRIDGE_PUBLIC_URL": bridge.base_url,
        "SOURCE_WEBHOOK": bridge.source.webhook_url,
        "TARGET_WEBHOOK": bridge.target.webhook_url,
        "HOOK_SECRET": HOOK_SECRET,
        "COLUMNS": "200",
    }
    return subprocess.run([sys.executable, "-m", "b24bridge.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_a_dead_delivery_is_replayed_once_after_the_route_is_fixed(
    bridge_factory: Callable[..., BridgeService],
) -> None:
    bridge = bridge_factory(BROKEN)
    webhook_rule(bridge.source, bridge.hook_url("partner-to-acme"))
    deal_id = new_deal(bridge.source, TITLE="Needs a fix")
    move(bridge.source, deal_id)
    [run] = bridge.settled_runs(1)
    assert run["status"] == "dead" and run["attempts"] == 1  # permanent: not retried
    assert run["error"] == "STAGE_ID: 'PREPARATION' is not in the map; allowed: EXECUTING"
    listed = _cli(bridge, "runs", "list", "--status", "dead")
    assert listed.returncode == 0 and "partner-to-acme" in listed.stdout and "not in the map" in listed.stdout

    bridge.stop()
    bridge.start(FIXED)  # the operator fixes the file and restarts the service
    replayed = _cli(bridge, "runs", "replay", "--status", "dead", "--route", "partner-to-acme")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == f"replayed 1 of 1 run(s): {run['id']}"
    [run] = bridge.settled_runs(1)
    assert run["status"] == "succeeded" and run["inputs"]["replays"] == 1
    [deal] = result(bridge.target, "crm.deal.list", {"select": ["TITLE", "STAGE_ID"]})
    assert (deal["TITLE"], deal["STAGE_ID"]) == ("Needs a fix", "NEW")

    # Replaying again changes nothing: the run is no longer dead.
    again = _cli(bridge, "runs", "replay", str(run["id"]))
    assert again.returncode == 1 and f"not dead (left alone): {run['id']}" in again.stderr
    assert len(result(bridge.target, "crm.deal.list")) == 1


def test_routes_check_names_file_line_and_field(bridge_factory: Callable[..., BridgeService]) -> None:
    bridge = bridge_factory(FIXED)
    checked = _cli(bridge, "routes", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().endswith("1 route(s) OK")
    assert f"{bridge.base_url}/bridge/hooks/partner-to-acme?secret=***&deal={{=Document:ID}}" in checked.stdout

    (bridge.data_dir / "routes.yaml").write_text(FIXED.replace("TITLE: ", "TITEL: "))
    checked = _cli(bridge, "routes", "check")
    path = bridge.data_dir / "routes.yaml"
    assert checked.returncode == 1
    problem = "routes.partner-to-acme.deal.TITEL: no such field in the deal of acme; allowed: a writable deal field of"
    assert f"{path}:15: {problem} acme (did you mean TITLE?)" in checked.stdout

    path.write_text(FIXED.replace("source: partner", "source: nobody"))
    started = _cli(bridge, "routes", "check")
    assert started.returncode == 2 and f"{path}:9: routes.partner-to-acme.source:" in started.stderr
