"""Mapping source records to target fields: the documented example, every rule form and how failures are reported."""

from __future__ import annotations

import pytest

from b24bridge.bridge.mapping import (
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
from b24bridge.bridge.route_model import FieldRule
from tests.bridge.conftest import COMPANY, CONTACT, DEAL, context, example_route, rules


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
