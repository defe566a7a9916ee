"""The route file: the documented example reads as documented, and every problem is reported with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from b24bridge.bridge.routes import FieldRule, RoutesError, load_routes
from tests.bridge.conftest import ENV, SECRET, WEBHOOK, documented_example, load, problems

# A small valid file; tests change one thing in it. Lines: portals 2-4, route r1 at 6, its deal at 10.
BASE = """\
portals:
  partner: {app: partner.bitrix24.com}
  acme: {webhook: "${ACME_WEBHOOK_URL}"}
routes:
  r1:
    source: partner
    target: acme
    triggers: {robot: true}
    deal:
      TITLE: "{{ deal.TITLE }}"
"""


def with_deal(*rules: str) -> str:
    return BASE + "".join(f"      {rule}\n" for rule in rules)


def test_the_documented_example_reads_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(documented_example(), encoding="utf-8")
    routes = load_routes(path, ENV)
    assert routes.path == str(path)
    assert routes.portals["partner"].app == "partner.bitrix24.com"
    assert routes.portals["acme"].webhook == WEBHOOK
    route = routes.routes["partner-to-acme"]
    assert (route.source, route.target, route.products, route.line) == ("partner", "acme", True, 9)
    assert (route.triggers.robot, route.triggers.hook_secret, route.triggers.event_stages) == (
        True,
        SECRET,
        ("C1:PREPARATION",),
    )
    deal = route.deal
    assert deal["CATEGORY_ID"] == FieldRule("const", 3, line=19)
    assert deal["TITLE"].kind == "template"
    assert (deal["OPPORTUNITY"].kind, deal["OPPORTUNITY"].value, deal["OPPORTUNITY"].type) == (
        "copy",
        "OPPORTUNITY",
        "money",
    )
    assert (dict(deal["CURRENCY_ID"].map or {}), deal["CURRENCY_ID"].default) == ({"RUR": "RUB"}, "USD")
    assert deal["STAGE_ID"].map == {"C1:PREPARATION": "C3:NEW", "C1:EXECUTING": "C3:PREPAYMENT_INVOICE"}
    assert (deal["SOURCE_ID"].kind, deal["SOURCE_ID"].value) == ("const", "PARTNER")
    assert (deal["COMMENTS"].kind, deal["COMMENTS"].required) == ("template", True)
    assert (deal["ASSIGNED_BY_ID"].kind, deal["ASSIGNED_BY_ID"].value, deal["ASSIGNED_BY_ID"].default) == (
        "user",
        "ASSIGNED_BY_ID",
        1,
    )
    assert route.contact is not None and route.contact.match == ("phone", "email")
    assert list(route.contact.fields) == ["NAME", "LAST_NAME", "PHONE", "EMAIL"]
    assert route.company is not None and route.company.match == ("tax_number", "email")
    assert route.status_back is not None and route.status_back.stages == {"C3:WON": "WON", "C3:LOSE": "LOSE"}
    assert route.status_back.line_of("stages.C3:WON") == 43
    assert route.triggers.line_of("events.stages.0") == 17


def test_secrets_stay_out_of_reprs() -> None:
    routes = load(BASE.replace("{robot: true}", '{hook: {secret: "${PARTNER_HOOK_SECRET}"}}'))
    text = repr(routes)
    assert "s3cretcode42" not in text and SECRET not in text
    assert "https://acme.bitrix24.com/rest/1/***/" in text


def test_every_problem_is_reported_at_once_with_its_line() -> None:
    text = """\
        portals:
          partner: {app: partner.bitrix24.com}
          partner: {app: other.bitrix24.com}
        routes:
          r1:
            source: partnr
            target: acme
            trigers: {robot: true}
            deal:
              TITLE: "{{ deal.TITLE }"
              STAGE_ID: {from: STAGE_ID, type: stage}
    """
    assert problems(text) == [
        "routes.yaml:3: portals.partner: duplicate key (first at line 2); allowed: each key once",
        "routes.yaml:8: routes.r1.trigers: unknown key; allowed: one of source, target, source_entity, "
        "target_entity, triggers, deal, contact, company, products, status_back (did you mean triggers?)",
        "routes.yaml:5: routes.r1: missing triggers; allowed: source:, target:, triggers:, deal: required",
        "routes.yaml:6: routes.r1.source: unknown portal 'partnr'; allowed: one of partner (did you mean partner?)",
        "routes.yaml:7: routes.r1.target: unknown portal 'acme'; allowed: one of partner",
        "routes.yaml:10: routes.r1.deal.TITLE: template does not compile: unexpected '}' (template line 1); "
        "allowed: Jinja2 syntax: {{ deal.TITLE }}, {% if ... %}",
        "routes.yaml:11: routes.r1.deal.STAGE_ID.type: unknown type 'stage'; allowed: one of string, int, float, "
        "money, date, datetime, bool, list",
    ]


def test_environment_variables_are_replaced_and_missing_ones_named() -> None:
    routes = load(with_deal('COMMENTS: "$${LITERAL} ${GREETING}"'), {**ENV, "GREETING": "hi"})
    assert routes.routes["r1"].deal["COMMENTS"].value == "${LITERAL} hi"
    assert problems(BASE, {}) == [
        "routes.yaml:3: portals.acme.webhook: environment variable ACME_WEBHOOK_URL is not set; "
        "allowed: a variable set for b24bridge",
    ]
    assert problems(with_deal('COMMENTS: "${not a name}"')) == [
        "routes.yaml:11: routes.r1.deal.COMMENTS: ${not a name} is not a variable name; "
        "allowed: ${NAME} with A-Z, 0-9 and _",
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://acme.bitrix24.com/rest/1/s3cretcode42/", "plain http is refused outside loopback"),
        ("https://acme.bitrix24.com/s3cretcode42/", "not an incoming webhook URL"),
        ("https://acme.bitrix24.com/rest/1/s3cretcode42/crm.deal.get?x=1", "not an incoming webhook URL"),
        ("ftp://acme.bitrix24.com/rest/1/s3cretcode42/", "not an https URL"),
    ],
)
def test_webhook_urls_must_be_https_webhooks_and_are_never_quoted(url: str, problem: str) -> None:
    found = problems(BASE, {"ACME_WEBHOOK_URL": url})
    assert found == [
        f"routes.yaml:3: portals.acme.webhook: {problem}; allowed: https://<portal>/rest/<user id>/<code>/ "
        "(plain http only on loopback, for the sandbox)"
    ]
    assert "s3cretcode42" not in found[0]


def test_plain_http_is_allowed_on_loopback_and_the_trailing_slash_added() -> None:
    routes = load(BASE, {"ACME_WEBHOOK_URL": "http://127.0.0.1:8090/rest/1/code"})
    assert routes.portals["acme"].webhook == "http://127.0.0.1:8090/rest/1/code/"


def test_portals_need_exactly_one_way_in_and_a_usable_reference() -> None:
    text = BASE.replace(
        "  partner: {app: partner.bitrix24.com}", "  partner: {app: https://p.bitrix24.com, webhook: x}"
    )
    assert problems(text) == [
        "routes.yaml:2: portals.partner: needs exactly one of app, webhook and endpoint;"
        " allowed: app:, webhook: or endpoint:",
        "routes.yaml:2: portals.partner.app: not a domain or member_id; "
        "allowed: portal.bitrix24.com, or the 32-character member_id",
        "routes.yaml:2: portals.partner.webhook: not an https URL; allowed: https://<portal>/rest/<user id>/<code>/ "
        "(plain http only on loopback, for the sandbox)",
    ]


def test_a_route_needs_a_trigger_the_robot_and_events_need_an_installed_app() -> None:
    assert problems(BASE.replace("{robot: true}", "{robot: false}")) == [
        "routes.yaml:8: routes.r1.triggers: no trigger; "
        "allowed: robot: true, hook: {secret: ...}, events: {stages: [...]}, inbound: {token: ...}"
    ]
    webhook_source = BASE.replace("source: partner", "source: acme").replace(
        "{robot: true}", '{robot: true, events: {stages: ["NEW"]}}'
    )
    needs_app = (
        "needs b24bridge installed in portal 'acme' (it is a webhook); "
        "allowed: hook: for a webhook-only source, or app: for the portal"
    )
    assert problems(webhook_source) == [
        f"routes.yaml:8: routes.r1.triggers.robot: {needs_app}",
        f"routes.yaml:8: routes.r1.triggers.events: {needs_app}",
    ]


def test_hook_secrets_must_be_long_and_url_safe_and_are_never_quoted() -> None:
    found = problems(BASE.replace("{robot: true}", "{hook: {secret: short-secret}}"))
    assert found == [
        "routes.yaml:8: routes.r1.triggers.hook.secret: too short or not URL-safe; "
        "allowed: at least 16 of A-Z a-z 0-9 . _ ~ -"
    ]
    assert "short-secret" not in found[0]
    assert problems(BASE.replace("{robot: true}", "{hook: {secret: 'sixteen chars & more'}}"))[0].endswith(
        "too short or not URL-safe; allowed: at least 16 of A-Z a-z 0-9 . _ ~ -"
    )


def test_rule_forms() -> None:
    deal = (
        load(
            with_deal(
                "CATEGORY_ID: 3",
                "IS_RECURRING: false",
                "UF_CRM_TAGS: [a, 2]",
                "COMMENTS: {const: '{{ not a template }}'}",
                "BEGINDATE: 2024-08-15",
                "STAGE_ID: {from: STAGE_ID, map: {1:30: X, on: Y, 3: Z}}",
                "UF_CRM_OWNER: {from: company.tax_number, default: '-'}",
                "ASSIGNED_BY_ID: {user: deal.ASSIGNED_BY_ID, default: '7'}",
            )
        )
        .routes["r1"]
        .deal
    )
    assert [(deal[name].kind, deal[name].value) for name in deal] == [
        ("template", "{{ deal.TITLE }}"),
        ("const", 3),
        ("const", False),
        ("const", ["a", 2]),
        ("const", "{{ not a template }}"),
        ("const", "2024-08-15"),  # a date stays the text written
        ("copy", "STAGE_ID"),
        ("copy", "company.tax_number"),
        ("user", "deal.ASSIGNED_BY_ID"),
    ]
    # map keys are compared as written: YAML 1.1 would read `1:30` as 90 and `on` as true
    assert deal["STAGE_ID"].map == {"1:30": "X", "on": "Y", "3": "Z"}
    assert deal["ASSIGNED_BY_ID"].default == 7
    assert deal["STAGE_ID"].line_of("map.on") == 16


def test_bad_rules_are_named_with_what_is_allowed() -> None:
    found = problems(
        with_deal(
            "COMMENTS:",
            "UF_CRM_A: {from: X, template: 'y'}",
            "UF_CRM_B: {from: foo.bar}",
            "UF_CRM_C: {from: source.url}",
            "UF_CRM_D: {user: ASSIGNED_BY_ID, map: {1: 2}, default: boss}",
            "UF_CRM_E: {from: 'deal ID'}",
            "UF_CRM_F: '{{ target.ID }}'",
            "Title: x",
            "UF_CRM_G: {from: ID, requried: true}",
            "UF_CRM_H: '{{ dael.TITLE }}'",
        )
    )
    forms = "a constant, a template string, or {from|const|template|user: ..., map:, default:, type:, required:}"
    assert found == [
        f"routes.yaml:11: routes.r1.deal.COMMENTS: empty value; allowed: {forms}",
        f"routes.yaml:12: routes.r1.deal.UF_CRM_A: needs exactly one of from, const, template, user (has from, "
        f"template); allowed: {forms}",
        "routes.yaml:13: routes.r1.deal.UF_CRM_B.from: unknown record 'foo'; allowed: one of deal, lead, item, record, "
        "contact, company, products, source, target_portal",
        "routes.yaml:14: routes.r1.deal.UF_CRM_C.from: source has no 'url'; allowed: one of name, domain, member_id",
        "routes.yaml:15: routes.r1.deal.UF_CRM_D.map: unknown key; allowed: one of user, default, required",
        "routes.yaml:15: routes.r1.deal.UF_CRM_D.default: not a user id; allowed: a target user's ID such as 1",
        "routes.yaml:16: routes.r1.deal.UF_CRM_E.from: not a field name or a dotted path; allowed: a field of the "
        "source deal's (TITLE, UF_CRM_X) or a dotted path (deal.ID, company.tax_number, source.name)",
        "routes.yaml:17: routes.r1.deal.UF_CRM_F: reads target, which only status_back.fields know; allowed: one of "
        "deal, lead, item, record, contact, company, products, source, target_portal, route",
        "routes.yaml:18: routes.r1.deal.Title: not a field name; allowed: upper-case Bitrix24 field names such as "
        "TITLE or UF_CRM_PARTNER_DEAL",
        "routes.yaml:19: routes.r1.deal.UF_CRM_G.requried: unknown key; allowed: one of from, map, default, type, "
        "required (did you mean required?)",
        "routes.yaml:20: routes.r1.deal.UF_CRM_H: unknown template variable 'dael'; allowed: one of deal, lead, item, "
        "record, contact, company, products, source, target_portal, route (did you mean deal?)",
    ]


def test_contacts_and_companies_match_by_known_keys_in_order() -> None:
    text = BASE + (
        "    contact:\n      fields: {NAME: {from: NAME}}\n"
        "    company:\n      match: [email, inn, email]\n      fields: {tax_number: {from: tax_number}}\n"
    )
    assert problems(text) == [
        "routes.yaml:14: routes.r1.company.match[1]: not a match key; allowed: one of tax_number, phone, email, or "
        "{field: NAME}",
        "routes.yaml:14: routes.r1.company.match[2]: email twice; allowed: each key once",
    ]
    route = load(text.replace("[email, inn, email]", "[]")).routes["r1"]
    assert route.contact is not None and route.contact.match == ("phone", "email")  # the default: all, in order
    assert route.company is not None and route.company.match == ()  # always create


def test_any_field_is_a_match_key_custom_fields_included() -> None:
    text = BASE + (
        "    company:\n      match: [tax_number, {field: UF_CRM_INN}, {field: UF_CRM_CODE, target: UF_CRM_PARTNER}]\n"
        "      fields: {TITLE: {from: TITLE}}\n"
    )
    route = load(text).routes["r1"]
    assert route.company is not None
    assert route.company.match == ("tax_number", "field:UF_CRM_INN", "field:UF_CRM_CODE>UF_CRM_PARTNER")
    bad = text.replace("{field: UF_CRM_INN}", "{field: uf_crm_inn}").replace(
        "{field: UF_CRM_CODE, target: UF_CRM_PARTNER}", "{target: UF_CRM_PARTNER, colour: red}"
    )
    assert problems(bad) == [
        "routes.yaml:12: routes.r1.company.match[1].field: not a field name; allowed: a name such as UF_CRM_INN",
        "routes.yaml:12: routes.r1.company.match[2].colour: unknown key; allowed: one of field, target",
        "routes.yaml:12: routes.r1.company.match[2]: missing field; allowed: field: required",
    ]
    twice = text.replace("{field: UF_CRM_CODE, target: UF_CRM_PARTNER}", "{field: UF_CRM_INN}")
    assert problems(twice) == [
        "routes.yaml:12: routes.r1.company.match[2]: field:UF_CRM_INN twice; allowed: each key once"
    ]


def test_status_back_needs_something_to_write() -> None:
    assert problems(BASE + "    status_back: {}\n") == [
        "routes.yaml:11: routes.r1.status_back: nothing to write back; allowed: stages: and/or fields:"
    ]
    back = load(BASE + "    status_back:\n      fields: {UF_CRM_ID: {from: ID}, UF_CRM_URL: '{{ target.url }}'}\n")
    assert back.routes["r1"].status_back is not None
    assert back.routes["r1"].status_back.fields["UF_CRM_URL"].kind == "template"


def test_anchors_and_merge_keys_share_rules_between_routes() -> None:
    text = BASE.replace("    deal:\n", "    deal: &deal\n") + (
        "  r2:\n    source: partner\n    target: acme\n    triggers: {robot: true}\n"
        "    deal:\n      <<: *deal\n      TITLE: other\n"
    )
    routes = load(text).routes
    assert routes["r2"].deal["TITLE"].value == "other"
    assert routes["r1"].deal["TITLE"].value == "{{ deal.TITLE }}"


def test_broken_yaml_empty_files_and_missing_files() -> None:
    assert problems("portals: [\n") == [
        "routes.yaml:2: (file): not valid YAML: expected the node content, but found '<stream end>'; "
        "allowed: YAML 1.1 (block or flow)"
    ]
    assert problems("") == ["routes.yaml:1: (file): the file is empty; allowed: a mapping with portals and routes"]
    assert problems("- a\n") == [
        "routes.yaml:1: (file): must be a mapping; allowed: a mapping with portals: and routes:"
    ]
    with pytest.raises(RoutesError) as caught:
        load_routes("/nonexistent/routes.yaml")
    assert caught.value.problems == ["/nonexistent/routes.yaml: cannot read the route file: No such file or directory"]


def test_route_and_portal_names_are_checked() -> None:
    text = BASE.replace("  r1:", "  R 1:")
    assert problems(text) == ["routes.yaml:5: routes['R 1']: not a route name; allowed: [a-z0-9][a-z0-9_-]{0,62}"]


def test_text_postgresql_cannot_hold_is_refused_with_its_line() -> None:
    text = BASE.replace('TITLE: "{{ deal.TITLE }}"', 'TITLE: "a\\0b"\n      "C\\0": "x"\n      D: "\\ud800"')
    assert problems(text) == [
        "routes.yaml:10: routes.r1.deal.TITLE: the value contains a NUL character, which cannot be stored; "
        "allowed: text without NUL characters",
        "routes.yaml:11: routes.r1.deal: a key contains a NUL character, which cannot be stored; allowed: text keys",
        "routes.yaml:12: routes.r1.deal.D: the value contains a lone surrogate, which is not text; "
        "allowed: text without NUL characters",
    ]


def test_a_smart_process_is_named_by_its_entity_type_id_or_its_title() -> None:
    text = BASE.replace("    target: acme\n", "    target: acme\n    target_entity: {smart_process: Orders}\n")
    text = text.replace("    deal:\n", "    item:\n")
    route = load(text).routes["r1"]
    assert route.target_entity.is_item and route.target_entity.process == "Orders"
    assert route.target_entity.entity_type_id == 0  # resolved through crm.type.list when a run needs it
    by_id = load(text.replace("{smart_process: Orders}", "{smart_process: 1038}")).routes["r1"]
    assert by_id.target_entity.entity_type_id == 1038 and by_id.target_entity.entity == "DYNAMIC_1038"
    assert problems(text.replace("{smart_process: Orders}", "{smart_process: 2}")) == [
        "routes.yaml:8: routes.r1.target_entity.smart_process: not a smart process; allowed: an entityTypeId (128 or "
        "more) or the process's title"
    ]
    assert problems(text.replace("    item:\n", "    products: true\n    item:\n")) == [
        "routes.yaml:10: routes.r1.products: a smart process's product rows (crm.item.productrow.*) are not handed "
        "over yet; allowed: products: false"
    ]
