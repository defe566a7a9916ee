"""Mapping's types: what each makes of a value and which values it refuses; any record maps or fails with a
MappingError."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from b24bridge.bridge.mapping import MappingError, fingerprint, map_fields, map_products
from b24bridge.bridge.route_model import FieldRule, Scope
from tests.bridge.conftest import context, example_route, rules


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


# --- properties -------------------------------------------------------------------------------------------------

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
