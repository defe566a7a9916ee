"""Mapping source records to target fields: the documented example, every rule form, type and failure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from b24bridge.bridge.mapping import (
    MappingContext,
    MappingError,
    changed,
    fingerprint,
    map_fields,
    map_products,
    match_lookups,
    multifield,
    read_path,
    source_user_ids,
    status_back_stage,
    user_sources,
)
from b24bridge.bridge.route_model import FieldRule, Route, Scope
from b24bridge.bridge.templates import MAX_OUTPUT
from tests.bridge.conftest import documented_example, load

SOURCE = {"name": "partner", "domain": "partner.bitrix24.com", "member_id": "a" * 32}
DEAL = {
    "ID": "42",
    "TITLE": "Boilers",
    "OPPORTUNITY": "1500.5",
    "CURRENCY_ID": "RUR",
    "STAGE_ID": "C1:PREPARATION",
    "BEGINDATE": "2024-08-15T00:00:00+03:00",
    "ASSIGNED_BY_ID": "5",
    "UF_CRM_TAGS": False,  # Bitrix24's empty multiple field
}
CONTACT = {
    "NAME": "Ann",
    "LAST_NAME": "Lee",
    "PHONE": [{"ID": "156", "VALUE_TYPE": "WORK", "VALUE": "+15551234567", "TYPE_ID": "PHONE"}],
    "EMAIL": [{"ID": "157", "VALUE_TYPE": "HOME", "VALUE": "ann@example.com", "TYPE_ID": "EMAIL"}],
}
COMPANY = {"TITLE": "Lee & Co", "tax_number": "7701234567"}


def example_route() -> Route:
    return load(documented_example()).routes["partner-to-acme"]


def context(**changes: Any) -> MappingContext:
    values: dict[str, Any] = {
        "deal": DEAL,
        "contact": CONTACT,
        "company": COMPANY,
        "source": SOURCE,
        "route": "partner-to-acme",
        "users": {5: 9},
    }
    return MappingContext(**{**values, **changes})


def rules(**items: FieldRule) -> dict[str, FieldRule]:
    return dict(items)


def test_the_documented_example_maps_a_deal_its_contact_and_company() -> None:
    route = example_route()
    assert map_fields(route.deal, "deal", context()) == {
        "CATEGORY_ID": 3,
        "TITLE": "Boilers (from partner)",
        "OPPORTUNITY": "1500.50",
        "CURRENCY_ID": "RUB",
        "STAGE_ID": "C3:NEW",
        "SOURCE_ID": "PARTNER",
        "UF_CRM_PARTNER_DEAL": 42,
        "BEGINDATE": "2024-08-15",
        "COMMENTS": "Partner deal 42",
        "ASSIGNED_BY_ID": 9,
    }
    assert route.contact is not None and route.company is not None
    assert map_fields(route.contact.fields, "contact", context()) == {
        "NAME": "Ann",
        "LAST_NAME": "Lee",
        "PHONE": [{"VALUE": "+15551234567", "VALUE_TYPE": "WORK"}],  # the source's multifield ID stays behind
        "EMAIL": [{"VALUE": "ann@example.com", "VALUE_TYPE": "HOME"}],
    }
    assert map_fields(route.company.fields, "company", context()) == {"TITLE": "Lee & Co", "tax_number": "7701234567"}
    assert match_lookups(route.contact, CONTACT) == [("phone", ["+15551234567"]), ("email", ["ann@example.com"])]
    assert match_lookups(route.company, COMPANY) == [("tax_number", ["7701234567"])]  # no e-mail: left out


def test_status_back_maps_target_stages_and_fields() -> None:
    back = example_route().status_back
    assert back is not None
    target = {"ID": "77", "STAGE_ID": "C3:WON", "url": "https://acme.bitrix24.com/crm/deal/details/77/"}
    assert map_fields(back.fields, "status_back", context(target=target)) == {
        "UF_CRM_ACME_DEAL_ID": "77",
        "UF_CRM_ACME_DEAL_URL": "https://acme.bitrix24.com/crm/deal/details/77/",
    }
    assert status_back_stage(back, "C3:WON") == "WON"
    assert status_back_stage(back, "C3:NEW") is None
    assert status_back_stage(back, None) is None


def test_every_problem_of_a_record_comes_in_one_error() -> None:
    deal = {**DEAL, "STAGE_ID": "C1:LOSE", "OPPORTUNITY": "a lot", "CURRENCY_ID": "EUR"}
    with pytest.raises(MappingError) as caught:
        map_fields(example_route().deal, "deal", context(deal=deal))
    assert caught.value.problems == (
        ("OPPORTUNITY", "'a lot' is not an amount"),
        ("STAGE_ID", "'C1:LOSE' is not in the map; allowed: C1:PREPARATION, C1:EXECUTING"),
    )
    assert str(caught.value) == (
        "OPPORTUNITY: 'a lot' is not an amount; STAGE_ID: 'C1:LOSE' is not in the map; allowed: C1:PREPARATION, "
        "C1:EXECUTING"
    )
    assert caught.value.field == "OPPORTUNITY"
    assert isinstance(caught.value, ValueError)
    with pytest.raises(MappingError) as leaked:
        map_fields(rules(X=FieldRule("copy", "X", type="int")), "deal", context(deal={"X": "https://a.io/rest/1/k3y/"}))
    assert str(leaked.value) == "X: 'https://a.io/rest/1/***/' is not a whole number"


def test_empty_values_take_the_default_or_are_left_out_or_fail_when_required() -> None:
    deal = {**DEAL, "CURRENCY_ID": "", "COMMENTS": None}
    mapped = map_fields(
        rules(
            CURRENCY_ID=FieldRule("copy", "CURRENCY_ID", map={"RUR": "RUB"}, default="USD"),
            COMMENTS=FieldRule("copy", "COMMENTS"),
            UF_CRM_TAGS=FieldRule("copy", "UF_CRM_TAGS", default=[]),
            UF_CRM_NOTE=FieldRule("copy", "UF_CRM_NOTE", default=""),  # default "" clears the target field
            OPPORTUNITY=FieldRule("copy", "OPPORTUNITY", map={"0": "0"}, default="0"),  # unmapped -> default
            BEGINDATE=FieldRule("copy", "CLOSEDATE", default="", type="date"),  # "" clears, whatever the type
            ADDITIONAL_INFO=FieldRule("const", ""),  # a constant is written as it is
        ),
        "deal",
        context(deal=deal),
    )
    assert mapped == {
        "CURRENCY_ID": "USD",
        "UF_CRM_TAGS": [],
        "UF_CRM_NOTE": "",
        "OPPORTUNITY": "0",
        "BEGINDATE": "",
        "ADDITIONAL_INFO": "",
    }
    with pytest.raises(MappingError, match=r"^COMMENTS: required, but the value is empty$"):
        map_fields(
            rules(COMMENTS=FieldRule("template", "{{ deal.COMMENTS }}", required=True)), "deal", context(deal=deal)
        )


def test_user_rules_use_the_matched_target_user_else_the_default() -> None:
    assigned = rules(ASSIGNED_BY_ID=FieldRule("user", "ASSIGNED_BY_ID", default=1))
    assert map_fields(assigned, "deal", context()) == {"ASSIGNED_BY_ID": 9}
    assert map_fields(assigned, "deal", context(users={})) == {"ASSIGNED_BY_ID": 1}
    assert map_fields(rules(ASSIGNED_BY_ID=FieldRule("user", "ASSIGNED_BY_ID")), "deal", context(users={})) == {}
    with pytest.raises(MappingError, match=r"^ASSIGNED_BY_ID: required, but no target user matches by e-mail$"):
        map_fields(rules(ASSIGNED_BY_ID=FieldRule("user", "ASSIGNED_BY_ID", required=True)), "deal", context(users={}))
    with pytest.raises(MappingError, match=r"^ASSIGNED_BY_ID: 'boss' is not a user id$"):
        map_fields(assigned, "deal", context(deal={**DEAL, "ASSIGNED_BY_ID": "boss"}))
    both = {**assigned, "UF_CRM_CREATOR": FieldRule("user", "deal.CREATED_BY_ID")}
    assert user_sources(both) == {"ASSIGNED_BY_ID", "deal.CREATED_BY_ID"}
    assert source_user_ids(both, "deal", context(deal={**DEAL, "CREATED_BY_ID": "8"})) == {5, 8}


@pytest.mark.parametrize(
    ("type_name", "value", "expected"),
    [
        ("money", "1500.5", "1500.50"),
        ("money", 99, "99.00"),
        ("money", "2.675", "2.68"),
        ("money", "100|usd", "100.00|USD"),  # a money user field keeps its currency
        ("money", "12,5", "12.50"),
        ("date", "2024-08-15T23:30:00+03:00", "2024-08-15"),  # the date as written, no timezone shift
        ("date", "15.08.2024", "2024-08-15"),
        ("date", "5.8.2024 10:30", "2024-08-05"),
        ("datetime", "2024-08-15T10:38:21+02:00", "2024-08-15T10:38:21+02:00"),
        ("datetime", "2024-08-15", "2024-08-15T00:00:00"),
        ("datetime", "15.08.2024 10:30", "2024-08-15T10:30:00"),
        ("bool", "Y", "Y"),
        ("bool", "false", "N"),
        ("bool", 1, "Y"),
        ("bool", True, "Y"),
        ("bool", "0", "N"),
        ("int", "12", 12),
        ("int", "12.0", 12),
        ("float", "1,5", 1.5),
        ("string", 1e20, "100000000000000000000"),
        ("string", 7, "7"),
        ("list", "a", ["a"]),
        ("list", ["a", "b"], ["a", "b"]),
        ("int", ["1", "2"], [1, 2]),  # a list is coerced item by item
    ],
)
def test_types(type_name: str, value: Any, expected: Any) -> None:
    rule = rules(X=FieldRule("copy", "X", type=type_name))
    assert map_fields(rule, "deal", context(deal={"X": value})) == {"X": expected}


@pytest.mark.parametrize(
    ("type_name", "value", "message"),
    [
        ("money", "NaN", "'NaN' is not an amount"),
        ("money", "12 EUR", "'12 EUR' is not an amount"),
        ("date", "2024-02-30", "'2024-02-30' is not a date"),
        ("date", "yesterday", "'yesterday' is not a date"),
        ("datetime", "15.08.2024 25:00", "'15.08.2024 25:00' is not a date and time"),
        ("bool", "maybe", "'maybe' is not a yes/no value"),
        ("int", "1.5", "'1.5' is not a whole number"),
        ("float", "inf", "'inf' is not a number"),
        ("string", {"a": 1}, "dict value is not text"),
        ("int", "x" * 100, "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... is not a whole number"),
    ],
)
def test_values_a_type_refuses_are_named(type_name: str, value: Any, message: str) -> None:
    with pytest.raises(MappingError) as caught:
        map_fields(rules(X=FieldRule("copy", "X", type=type_name)), "deal", context(deal={"X": value}))
    assert caught.value.problems == (("X", message),)


def test_paths_read_the_scope_record_or_the_context() -> None:
    ctx = context(products=[{"PRICE": 10}], target={"ID": "3"})
    assert read_path("TITLE", "deal", ctx) == "Boilers"
    assert read_path("NAME", "contact", ctx) == "Ann"
    assert read_path("tax_number", "company", ctx) == "7701234567"
    assert read_path("ID", "status_back", ctx) == "3"
    assert read_path("company.TITLE", "deal", ctx) == "Lee & Co"
    assert read_path("source.domain", "deal", ctx) == "partner.bitrix24.com"
    assert read_path("products.0.PRICE", "deal", ctx) == 10
    assert read_path("products.1.PRICE", "deal", ctx) is None
    assert read_path("UF_CRM_TAGS", "deal", ctx) is None  # false: Bitrix24's empty multiple field
    assert read_path("contact.PHONE", "deal", ctx) == [{"VALUE": "+15551234567", "VALUE_TYPE": "WORK"}]
    assert read_path("NAME", "contact", context(contact=None)) is None


def test_templates_render_none_as_empty_and_name_what_is_missing() -> None:
    deal = {**DEAL, "COMMENTS": None}
    assert map_fields(rules(X=FieldRule("template", "[{{ deal.COMMENTS }}]")), "deal", context(deal=deal)) == {
        "X": "[]"
    }
    cases = {
        "{{ deal.TITEL }}": "deal has no field 'TITEL'",
        "{{ contact.NAME }}": "cannot read 'NAME': the record is empty",
        "{{ deal.TITLE.__class__ }}": "access to attribute '__class__' of 'str' object is unsafe.",
        "{{ 1 / 0 }}": "ZeroDivisionError: division by zero",
        "{% for i in range(99999) %}{{ '-' * 100 }}{% endfor %}": f"template output is over {MAX_OUTPUT} characters",
        "{{ '-' * 10**9 }}": "a sequence repeated 1000000000 times would be over 100000 long",
    }
    for template, message in cases.items():
        with pytest.raises(MappingError) as caught:
            map_fields(rules(X=FieldRule("template", template)), "deal", context(contact=None))
        assert caught.value.problems == (("X", message),), template
    documented_idioms = {
        "{% if deal.UF_CRM_X is defined %}y{% else %}n{% endif %}": "n",
        "[{{ deal.get('UF_CRM_X', '') }}]": "[]",
        "{% if contact %}{{ contact.NAME }}{% else %}none{% endif %}": "none",
        "{{ products | sum(attribute='PRICE') }}": "5",
    }
    products = [{"PRICE": 2}, {"PRICE": 3}]
    for template, output in documented_idioms.items():
        mapped = map_fields(rules(X=FieldRule("template", template)), "deal", context(contact=None, products=products))
        assert mapped == {"X": output}, template
    money = rules(A=FieldRule("template", "{{ deal.UF_CRM_BUDGET | amount }}", type="money"))
    money["C"] = FieldRule("template", "{{ deal.UF_CRM_BUDGET | currency }}")
    assert map_fields(money, "deal", context(deal={"UF_CRM_BUDGET": "99.5|EUR"})) == {"A": "99.50", "C": "EUR"}


def test_multifields_drop_ids_empties_and_repeats() -> None:
    assert multifield(None) == []
    assert multifield("+1555") == [{"VALUE": "+1555", "VALUE_TYPE": "WORK"}]
    assert multifield([" a@x.io ", {"VALUE": "a@x.io", "VALUE_TYPE": "WORK", "ID": "9"}, {"VALUE": ""}, 15551234]) == [
        {"VALUE": "a@x.io", "VALUE_TYPE": "WORK"},
        {"VALUE": "15551234", "VALUE_TYPE": "WORK"},
    ]
    with pytest.raises(ValueError, match="is not a phone, e-mail or link"):
        multifield([["nested"]])
    # a plain value into a contact's multifield is wrapped; a deal has no multifields
    phone = rules(PHONE=FieldRule("copy", "deal.UF_CRM_PHONE"))
    ctx = context(deal={"UF_CRM_PHONE": "+1999"})
    assert map_fields(phone, "contact", ctx) == {"PHONE": [{"VALUE": "+1999", "VALUE_TYPE": "WORK"}]}
    assert map_fields(phone, "deal", ctx) == {"PHONE": "+1999"}


def test_product_rows_become_free_text_rows() -> None:
    row = {
        "ID": "11", "OWNER_ID": "42", "OWNER_TYPE": "D", "PRODUCT_ID": 17, "PRODUCT_NAME": "Boiler X", "PRICE": 1180.0,
        "PRICE_EXCLUSIVE": 1000.0, "QUANTITY": "2", "DISCOUNT_TYPE_ID": 2, "DISCOUNT_RATE": "10", "DISCOUNT_SUM": 100,
        "TAX_RATE": "18", "TAX_INCLUDED": "Y", "MEASURE_CODE": "796", "MEASURE_NAME": "pcs", "SORT": "10",
    }  # fmt: skip
    free = {"ORIGINAL_PRODUCT_NAME": "Service", "PRICE": "50", "TAX_RATE": None, "TAX_INCLUDED": "N"}
    assert map_products([row, free]) == [
        {
            "PRODUCT_ID": 0, "PRODUCT_NAME": "Boiler X", "PRICE": 1180.0, "QUANTITY": 2.0, "DISCOUNT_RATE": 10.0,
            "DISCOUNT_SUM": 100.0, "DISCOUNT_TYPE_ID": 2, "TAX_RATE": 18.0, "TAX_INCLUDED": "Y", "MEASURE_CODE": 796,
            "MEASURE_NAME": "pcs", "SORT": 10,
        },
        {
            "PRODUCT_ID": 0, "PRODUCT_NAME": "Service", "PRICE": 50.0, "QUANTITY": 1.0, "DISCOUNT_RATE": 0.0,
            "DISCOUNT_SUM": 0.0, "DISCOUNT_TYPE_ID": 2, "TAX_INCLUDED": "N", "SORT": 20,
        },
    ]  # fmt: skip
    with pytest.raises(MappingError) as caught:
        map_products([{"PRICE": "free"}, "row", {"QUANTITY": "many", "TAX_INCLUDED": "?"}])
    assert caught.value.problems == (
        ("products[0].PRICE", "'free' is not a number"),
        ("products[1]", "not a product row"),
        ("products[2].QUANTITY", "'many' is not a number"),
        ("products[2].TAX_INCLUDED", "'?' is not a yes/no value"),
    )


def test_fingerprints_are_stable_and_changed_keeps_only_what_differs() -> None:
    values = {"TITLE": "A", "PHONE": [{"VALUE": "1", "VALUE_TYPE": "WORK"}], "OPPORTUNITY": "1.00"}
    same = {"OPPORTUNITY": "1.00", "PHONE": [{"VALUE_TYPE": "WORK", "VALUE": "1"}], "TITLE": "A"}
    assert fingerprint(values) == fingerprint(same)
    assert len(fingerprint(values)) == 64
    assert fingerprint(values) != fingerprint({**values, "TITLE": "B"})
    assert changed(values, same) == {}
    assert changed({**values, "TITLE": "B", "NEW": 1}, same) == {"TITLE": "B", "NEW": 1}
    assert changed(values, {}) == values
    assert changed({"N": 1}, {"N": 1.0}) == {"N": 1}  # delivered as 1.0, now 1: written again, never lost


# --- properties -------------------------------------------------------------------------------------------------

_CANARY = "canary-d41d8cd98f00b204"
_ESCAPE_BASES = [
    "deal",
    "deal.TITLE",
    "''",
    "[]",
    "products",
    "cycler",
    "joiner",
    "namespace",
    "range",
    "route",
    "self",
]
_ESCAPE_STEPS = [
    "__class__", "__mro__", "__subclasses__()", "__init__", "__globals__", "__builtins__", "__dict__", "mro()",
    "__base__", "__getattribute__('__class__')", "gi_frame", "f_globals", "environ", "os", "__self__", "func_globals",
    "_TemplateReference__context", "__code__", "__reduce__()", "[0]", "['os']", "items()", "keys()", "format",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_ESCAPE_BASES), st.lists(st.sampled_from(_ESCAPE_STEPS), min_size=1, max_size=5))
def test_templates_never_escape_the_sandbox(base: str, steps: list[str]) -> None:
    """Attribute chains that reach Python's internals in plain Jinja2 are refused or render nothing of them."""
    import os

    os.environ["B24BRIDGE_TEST_CANARY"] = _CANARY  # what an escape to os.environ would show
    expression = base + "".join(step if step.startswith("[") else f".{step}" for step in steps)
    try:
        output = map_fields(rules(X=FieldRule("template", f"{{{{ {expression} }}}}")), "deal", context()).get("X", "")
    except MappingError:
        return
    assert _CANARY not in output
    assert not any(marker in output for marker in ("<class", "<module", "<function", "<built-in function", "<frame"))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_record_values_are_never_evaluated(title: str) -> None:
    mapped = map_fields(rules(X=FieldRule("template", "{{ deal.TITLE }}")), "deal", context(deal={"TITLE": title}))
    assert mapped == ({"X": title} if title.strip() else {})


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
    st.sampled_from(["Y", "N", "1500.5", "100|USD", "2024-08-15", "15.08.2024", "2024-08-15T10:00:00+03:00", "C1:NEW"]),
)  # fmt: skip
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.lists(st.fixed_dictionaries({"VALUE": _SCALARS, "VALUE_TYPE": st.sampled_from(["WORK", "HOME"])}), max_size=3),
    st.dictionaries(st.text(max_size=5), _SCALARS, max_size=3),
)
_FIELDS = ["ID", "TITLE", "OPPORTUNITY", "CURRENCY_ID", "STAGE_ID", "BEGINDATE", "ASSIGNED_BY_ID", "PHONE", "X"]
_RECORDS = st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=len(_FIELDS))
_TYPES = [None, "string", "int", "float", "money", "date", "datetime", "bool", "list"]


@settings(max_examples=300, deadline=None)
@given(
    _RECORDS,
    st.one_of(st.none(), _RECORDS),
    st.lists(st.tuples(st.sampled_from(_FIELDS), st.sampled_from(_TYPES), st.booleans()), max_size=6),
)
def test_any_record_maps_or_raises_a_mapping_error(
    deal: dict[str, Any], contact: dict[str, Any] | None, extra: list[tuple[str, str | None, bool]]
) -> None:
    route = example_route()
    all_rules = dict(route.deal)
    for index, (name, type_name, mapped) in enumerate(extra):
        value_map = {"C1:NEW": "C3:NEW", "Y": 1} if mapped else None
        all_rules[f"UF_CRM_{index}"] = FieldRule("copy", name, map=value_map, type=type_name)
    ctx = context(deal=deal, contact=contact, products=[deal])
    assert route.contact is not None
    scopes: list[tuple[Mapping[str, FieldRule], Scope]] = [(all_rules, "deal"), (route.contact.fields, "contact")]
    for rule_set, scope in scopes:
        try:
            values = map_fields(rule_set, scope, ctx)
        except MappingError as exc:
            assert exc.problems and all(name in rule_set for name, _ in exc.problems)
            continue
        fingerprint(values)  # every mapped value is plain JSON
        assert not any(isinstance(v, float) and not math.isfinite(v) for v in values.values())
    try:
        map_products([deal, contact])
    except MappingError as exc:
        assert all(name.startswith("products[") for name, _ in exc.problems)
