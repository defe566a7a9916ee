"""``routes check`` against two real sandbox portals over HTTP: their fields, funnels, stages and lists."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from b24bridge.bitrix import BitrixClient, WebhookAuth
from b24bridge.bridge.check import PortalSchema, check_route, check_routes, fetch_schema
from tests.bridge.conftest import documented_example, load
from tests.livehttp import serve
from tests.sandbox.conftest import CloudPortal, LiveCloud

Schemas = tuple[PortalSchema, PortalSchema]


def rest(portal: CloudPortal, method: str, params: dict[str, Any]) -> Any:
    response = portal.call(method, params)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def userfield(portal: CloudPortal, name: str, user_type: str, **extra: Any) -> None:
    rest(portal, "crm.deal.userfield.add", {"fields": {"FIELD_NAME": name, "USER_TYPE_ID": user_type, **extra}})


@pytest.fixture(scope="module")
def cloud() -> Iterator[LiveCloud]:
    """A partner portal (funnel 1) and an acme portal (funnels 1-3) with the user fields the example uses."""
    for live in serve(LiveCloud(2, limits_enabled=False)):
        partner, acme = live
        rest(partner, "crm.category.add", {"entityTypeId": 2, "fields": {"name": "Partners"}})
        userfield(partner, "ACME_DEAL_ID", "string")
        userfield(partner, "ACME_DEAL_URL", "url")
        userfield(partner, "TAGS", "string", MULTIPLE="Y")
        for name in ("Retail", "Wholesale", "Partners"):
            rest(acme, "crm.category.add", {"entityTypeId": 2, "fields": {"name": name}})
        userfield(acme, "PARTNER_DEAL", "integer")
        userfield(acme, "KIND", "enumeration", LIST=[{"VALUE": "A"}, {"VALUE": "B"}])
        userfield(acme, "MANAGER", "employee")
        yield live


@pytest.fixture(scope="module")
async def schemas(cloud: LiveCloud) -> Schemas:
    partner, acme = cloud
    async with BitrixClient() as client:
        return (
            await fetch_schema(client.portal(WebhookAuth(partner.webhook_url))),
            await fetch_schema(client.portal(WebhookAuth(acme.webhook_url))),
        )


def test_a_schema_holds_the_portals_fields_funnels_stages_and_lists(schemas: Schemas) -> None:
    partner, acme = schemas
    assert partner.categories == {0: "General", 1: "Partners"}
    assert acme.categories == {0: "General", 1: "Retail", 2: "Wholesale", 3: "Partners"}
    assert partner.stages[0] == (
        "NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE", "WON", "LOSE", "APOLOGY",
    )  # fmt: skip
    assert acme.stages[3][:2] == ("C3:NEW", "C3:PREPARATION")
    assert "C1:NEW" in partner.stages_of(None) and "NEW" in partner.stages_of(None)
    assert acme.deal["UF_CRM_PARTNER_DEAL"]["type"] == "integer"
    assert acme.deal["ID"]["isReadOnly"] is True
    assert partner.contact["PHONE"]["type"] == "crm_multifield"
    assert "TITLE" in partner.company
    assert "PARTNER" in acme.statuses["SOURCE"]


def test_the_documented_example_passes(schemas: Schemas) -> None:
    route_file = load(documented_example())
    assert check_route(route_file.routes["partner-to-acme"], *schemas) == []
    assert check_routes(route_file, {"partner": schemas[0], "acme": schemas[1]}) == []
    assert check_routes(route_file, {"partner": schemas[0]}) == []  # a portal without a schema is not checked


BAD = """\
portals:
  partner: {app: partner.bitrix24.com}
  acme: {webhook: "${ACME_WEBHOOK_URL}"}
routes:
  bad:
    source: partner
    target: acme
    triggers:
      events: {stages: ["C1:PREPARATON"]}
    deal:
      CATEGORY_ID: 3
      TITEL: "{{ deal.TITLE }}"
      DATE_CREATE: {from: DATE_CREATE}
      COMMENTS: "{{ deal.COMENTS }}"
      STAGE_ID: {from: STAGE_ID, map: {"C1:PREPARING": "C3:NEW", "C1:EXECUTING": "C2:NEW"}}
      SOURCE_ID: {const: PARTNERS}
      UF_CRM_PARTNER_DEAL: {from: BEGINDATE, type: date}
      OPPORTUNITY: {from: OPPORTUNTY, type: money}
      UF_CRM_KIND: {from: TYPE_ID, map: {SALE: 1, GOODS: 3}}
      TYPE_ID: {user: ASSIGNED_BY_ID}
      UF_CRM_MANAGER: {from: UF_CRM_TAGS}
      ADDITIONAL_INFO: {from: ID, type: list}
    contact:
      fields:
        NAME: {from: FIRST_NAME}
        PHON: {from: PHONE}
    status_back:
      stages: {"C3:WONN": WON, "C3:LOSE": LOST}
      fields:
        UF_CRM_ACME_ID: "{{ target.ID }}"
        UF_CRM_ACME_DEAL_URL: {from: URL}
"""


def test_a_bad_route_gets_every_problem_with_its_line_and_what_is_allowed(schemas: Schemas) -> None:
    partner, acme = schemas
    c3 = ", ".join(acme.stages[3])
    partner_stages = ", ".join(partner.stages_of(None))
    sources = ", ".join(acme.statuses["SOURCE"])
    writable = ", ".join(sorted(name for name, spec in acme.deal.items() if not spec["isReadOnly"]))
    expected = [
        (9, "triggers.events.stages[0]: not a deal stage of partner; "
            f"allowed: one of {partner_stages} (did you mean C1:PREPARATION?)"),
        (12, "deal.TITEL: no such field in the deal of acme; allowed: a writable deal field of acme "
             "(did you mean TITLE?)"),
        (13, f"deal.DATE_CREATE: read-only in acme; allowed: one of {writable}"),
        (14, "deal.COMMENTS: template reads deal.COMENTS: the deal of partner has no such field; "
             "allowed: a deal field of partner (did you mean COMMENTS?)"),
        (15, "deal.STAGE_ID.map.C1:EXECUTING: 'C2:NEW' is not allowed in STAGE_ID; "
             f"allowed: one of {c3} (did you mean C3:NEW?)"),
        (15, "deal.STAGE_ID.map.C1:PREPARING: 'C1:PREPARING' is not a value of the source's STAGE_ID; "
             f"allowed: one of {partner_stages} (did you mean C1:PREPARATION?)"),
        (16, f"deal.SOURCE_ID: 'PARTNERS' is not allowed in SOURCE_ID; allowed: one of {sources} "
             "(did you mean PARTNER?)"),
        (17, "deal.UF_CRM_PARTNER_DEAL: type date does not fit field type integer; "
             "allowed: no type, or int, float, string"),
        (18, "deal.OPPORTUNITY: reads OPPORTUNTY: the deal of partner has no such field; "
             "allowed: a deal field of partner (did you mean OPPORTUNITY?)"),
        (19, "deal.UF_CRM_KIND.map.GOODS: 3 is not allowed in UF_CRM_KIND; allowed: one of 1, 2"),
        (20, "deal.TYPE_ID: a user rule writes a crm_status field; allowed: a user field: ASSIGNED_BY_ID, "
             "UF_CRM_MANAGER"),
        (21, "deal.UF_CRM_MANAGER: copies a multiple field into a single-value field; "
             "allowed: a template that picks one value, e.g. {{ deal.UF_CRM_X[0] }}"),
        (22, "deal.ADDITIONAL_INFO: type list into a single-value field; allowed: a multiple field"),
        (25, "contact.fields.NAME: reads FIRST_NAME: the contact of partner has no such field; "
             "allowed: a contact field of partner (did you mean LAST_NAME?)"),
        (26, "contact.fields.PHON: no such field in the contact of acme; "
             "allowed: a writable contact field of acme (did you mean PHONE?)"),
        (28, f"status_back.stages.C3:WONN: not a deal stage of acme; allowed: one of {c3} (did you mean C3:WON?)"),
        (28, "status_back.stages.C3:LOSE: 'LOST' is not a deal stage of partner; "
             f"allowed: one of {partner_stages} (did you mean LOSE?)"),
        (30, "status_back.fields.UF_CRM_ACME_ID: no such field in the deal of partner; "
             "allowed: a writable deal field of partner (did you mean UF_CRM_ACME_DEAL_ID?)"),
        (31, "status_back.fields.UF_CRM_ACME_DEAL_URL: reads URL: the deal of acme has no such field; "
             f"allowed: one of {', '.join(sorted([*acme.deal, 'url']))}"),
    ]  # fmt: skip
    assert check_route(load(BAD).routes["bad"], *schemas) == [
        f"routes.yaml:{line}: routes.bad.{message}" for line, message in expected
    ]


def test_stage_values_follow_the_target_funnel_and_status_back_fields_the_source(schemas: Schemas) -> None:
    text = documented_example().replace("CATEGORY_ID: 3 ", "CATEGORY_ID: 2 ")
    found = check_route(load(text).routes["partner-to-acme"], *schemas)
    c2 = ", ".join(schemas[1].stages[2])
    assert found == [
        f"routes.yaml:23: routes.partner-to-acme.deal.STAGE_ID.map.{key}: {value!r} is not allowed in STAGE_ID; "
        f"allowed: one of {c2} (did you mean {value.replace('C3', 'C2')}?)"
        for key, value in (("C1:PREPARATION", "C3:NEW"), ("C1:EXECUTING", "C3:PREPAYMENT_INVOICE"))
    ] + [
        f"routes.yaml:43: routes.partner-to-acme.status_back.stages.{stage}: not a deal stage of acme; "
        f"allowed: one of {c2} (did you mean {stage.replace('C3', 'C2')}?)"
        for stage in ("C3:WON", "C3:LOSE")
    ]
    unknown_category = documented_example().replace("CATEGORY_ID: 3 ", "CATEGORY_ID: 9 ")
    assert check_route(load(unknown_category).routes["partner-to-acme"], *schemas)[0] == (
        "routes.yaml:19: routes.partner-to-acme.deal.CATEGORY_ID: 9 is not allowed in CATEGORY_ID; "
        "allowed: one of 0, 1, 2, 3"
    )


def test_a_field_match_key_names_a_field_of_both_portals(schemas: Schemas) -> None:
    by_title = documented_example().replace(
        "match: [tax_number, email]", "match: [{field: TITLE}, {field: UF_CRM_INN}]"
    )
    found = check_route(load(by_title).routes["partner-to-acme"], *schemas)
    assert [problem.split(";")[0] for problem in found] == [
        "routes.yaml:37: routes.partner-to-acme.company.match[1]: no such field in the company of partner",
        "routes.yaml:37: routes.partner-to-acme.company.match[1]: no such field in the company of acme",
    ]


LEAD_ROUTE = """
portals:
  partner: {app: partner.bitrix24.com}
  acme: {webhook: "https://acme.bitrix24.com/rest/1/abcdefgh12345678/"}
routes:
  leads:
    source: partner
    source_entity: lead
    target: acme
    triggers:
      events: {stages: [IN_PROCESS, PREPARATION]}
    deal:
      TITLE: "{{ lead.TITLE }}"
      COMMENTS: {from: SOURCE_DESCRIPTON}
      STAGE_ID: {from: STATUS_ID, map: {NEW: NEW, IN_PROCES: PREPARATION}}
    status_back:
      stages: {WON: PROCESSED, LOSE: LOST}
"""


def test_a_lead_route_is_checked_against_the_lead_fields_and_stages(schemas: Schemas) -> None:
    found = [problem.split("; allowed")[0] for problem in check_route(load(LEAD_ROUTE).routes["leads"], *schemas)]
    assert found == [
        "routes.yaml:11: routes.leads.triggers.events.stages[1]: not a lead stage of partner",
        "routes.yaml:14: routes.leads.deal.COMMENTS: reads SOURCE_DESCRIPTON: the lead of partner has no such field",
        "routes.yaml:15: routes.leads.deal.STAGE_ID.map.IN_PROCES: 'IN_PROCES' is not a value of the source's "
        "STATUS_ID",
        "routes.yaml:17: routes.leads.status_back.stages.LOSE: 'LOST' is not a lead stage of partner",
    ]
