"""``routes check`` on routes with a smart process, against real sandbox portals over HTTP: the process named by its
title or entityTypeId must exist, and its fields and stages are the process's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from b24bridge.bitrix import BitrixClient, WebhookAuth
from b24bridge.bridge.check import PortalSchema, check_routes, fetch_schema
from tests.bridge.conftest import load
from tests.bridge_flows.conftest import new_process
from tests.livehttp import serve
from tests.sandbox.conftest import LiveCloud

Schemas = tuple[PortalSchema, PortalSchema]


@pytest.fixture(scope="module")
def cloud() -> Iterator[tuple[LiveCloud, dict[str, int], int]]:
    """A partner portal and an acme portal with two processes, "Warehouse" then "Orders" (its entityTypeId and its
    default pipeline given)."""
    for live in serve(LiveCloud(2, limits_enabled=False)):
        _, acme = live
        made = {title: new_process(acme, title) for title in ("Warehouse", "Orders")}
        yield live, {title: type_id for title, (type_id, _) in made.items()}, made["Orders"][1]


@pytest.fixture(scope="module")
async def schemas(cloud: tuple[LiveCloud, dict[str, int], int]) -> Schemas:
    (partner, acme), _, _ = cloud
    async with BitrixClient() as client:
        return (
            await fetch_schema(client.portal(WebhookAuth(partner.webhook_url))),
            await fetch_schema(client.portal(WebhookAuth(acme.webhook_url))),
        )


ROUTE = """\
portals:
  partner:
    webhook: https://partner.bitrix24.com/rest/1/abc/
  acme:
    webhook: https://acme.bitrix24.com/rest/1/abc/
routes:
  deals-to-orders:
    source: partner
    target: acme
    target_entity: {smart_process: PROCESS}
    triggers: {hook: {secret: hook-secret-0123456789}}
    item:
      TITLE: "{{ deal.TITLE }}"
      STAGE_ID: {from: STAGE_ID, map: {NEW: "STAGE:NEW", PREPARATION: "STAGE:SHIPPED"}}
      ASSIGNED_BY_ID: 1
      UF_CRM_NOPE: "x"
    status_back:
      stages: {"STAGE:SUCCESS": WON, "STAGE:LOST": LOSE}
"""


def test_a_process_is_found_by_title_or_id_and_its_own_fields_and_stages_are_checked(
    cloud: tuple[LiveCloud, dict[str, int], int], schemas: Schemas
) -> None:
    _, made, pipeline = cloud
    orders = made["Orders"]
    partner, acme = schemas
    assert acme.processes[orders].title == "Orders" and "STAGE_ID" in acme.processes[orders].fields
    stage = f"DT{orders}_{pipeline}"
    text = ROUTE.replace("STAGE:", f"{stage}:")
    by_schema = {"partner": partner, "acme": acme}
    for named in ("Orders", str(orders)):
        found = check_routes(load(text.replace("PROCESS", named)), by_schema)
        assert [line.split(";")[0] for line in found] == [
            f"routes.yaml:14: routes.deals-to-orders.item.STAGE_ID.map.PREPARATION: '{stage}:SHIPPED' is not allowed "
            "in STAGE_ID",
            f"routes.yaml:16: routes.deals-to-orders.item.UF_CRM_NOPE: no such field in the smart-process item "
            f"({'Orders, ' if named == 'Orders' else ''}{orders}) of acme",
            f"routes.yaml:18: routes.deals-to-orders.status_back.stages.{stage}:LOST: not a smart-process item "
            f"({'Orders, ' if named == 'Orders' else ''}{orders}) stage of acme",
        ], found
    missing = check_routes(load(text.replace("PROCESS", "Invoices")), by_schema)
    assert missing == [
        "routes.yaml:10: routes.deals-to-orders.target_entity: in acme; allowed: no such smart process (the portal "
        f"has: Warehouse ({made['Warehouse']}), Orders ({orders}))"
    ]
