"""Template rules: what they render, how a failing template is named, and that no template escapes the sandbox."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from b24bridge.bridge.mapping import MappingError, map_fields
from b24bridge.bridge.route_model import FieldRule
from b24bridge.bridge.templates import MAX_OUTPUT
from tests.bridge.conftest import DEAL, context, rules


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
