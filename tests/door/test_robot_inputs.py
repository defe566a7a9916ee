"""Property tests of what a robot call may carry: any bytes in, a 4xx or a call PostgreSQL will store out.

The parser has its own properties (tests/test_forms.py); these go one step further, through ``read_call`` and the
robot's validation, to the run that would be written: no NUL anywhere (text and jsonb refuse it), JSON without
NaN or Infinity (jsonb refuses them), a deduplication key that fits one B-tree entry, a size bounded by the body.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from b24bridge.forms import FormError, parse_form
from b24bridge.robots.definitions import declared
from b24bridge.robots.definitions.create_contact import CODE
from b24bridge.robots.intake import read_call
from b24bridge.robots.registry import InvalidInput, Property

ROBOT = declared()[CODE]
NAMES = [
    "workflow_id",
    "event_token",
    "code",
    "document_id[0]",
    "document_id[]",
    "document_type[2]",
    "use_subscription",
    "timeout_duration",
    "ts",
    "auth[member_id]",
    "auth[application_token]",
    "auth[domain]",
    "auth[user_id]",
    *(f"properties[{key}]" for key in ROBOT.properties),
    "properties[phone][]",
    "properties[x][0]",
]
VALUES = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"-?[0-9]{1,30}", fullmatch=True),
    st.sampled_from(["inf", "-Infinity", "nan", "1e400", "Y", "N", "user_1", "٣", "²", "1_000", "+15551234567"]),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=2000),
)
KEYS = st.one_of(st.sampled_from(NAMES), st.text(max_size=20))
# Just past the cap of every checked field, so "too long" is reached as well as "fits".
LONG = st.sampled_from([("workflow_id", 256), ("event_token", 1025), ("auth[member_id]", 65), ("ts", 33)])


def encode(pairs: list[tuple[str, str]]) -> bytes:
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in pairs).encode()


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [str(key), *strings(item)]]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return [value] if isinstance(value, str) else []


def check(body: bytes) -> None:
    started = time.perf_counter()
    try:
        call = read_call(CODE, parse_form(body))
    except FormError as exc:
        assert 400 <= exc.status < 500
        assert exc.field is None or exc.field.isprintable()
        return
    try:
        values = ROBOT.validate(call.properties)
    except InvalidInput:
        values = {}  # stored as a failed run, its error answered to the workflow: the same inputs are written
    inputs = {**call.inputs, "values": values}
    stored = json.dumps(inputs, allow_nan=False)  # raises on NaN or Infinity, as jsonb would
    row_text = [call.code, call.member_id or "", call.workflow_id, call.event_token, *call.document_id]
    assert not any("\x00" in text for text in [*row_text, *strings(inputs)])
    dedupe_key = (call.member_id or "") + call.workflow_id + call.event_token
    assert len(dedupe_key.encode()) < 2000  # one B-tree entry holds ~2.7 KB
    assert len(stored) <= 6 * len(body) + 1024  # \\uXXXX escapes at worst
    assert time.perf_counter() - started < 0.5


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_any_bytes_are_a_4xx_or_a_storable_call(body: bytes) -> None:
    check(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(KEYS, VALUES), max_size=30), st.lists(LONG, max_size=2))
def test_robot_calls_of_any_values_are_a_4xx_or_a_storable_call(
    pairs: list[tuple[str, str]], long: list[tuple[str, int]]
) -> None:
    base = [("workflow_id", "wf.1"), ("event_token", "t"), ("auth[member_id]", "m1"), ("auth[application_token]", "a")]
    check(encode(base + pairs + [(name, "x" * size) for name, size in long]))


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("double", "inf"),
        ("double", "-Infinity"),
        ("double", "nan"),
        ("double", "1e400"),
        ("int", "٣"),
        ("int", "1_000"),
        ("int", "9" * 19),
        ("user", "user_٣"),
        ("user", "9" * 30),
    ],
)
def test_property_values_a_portal_would_not_mean_are_invalid(kind: str, text: str) -> None:
    # Python's float() and int() take these; JSON has no Infinity, and the portal means ASCII decimals.
    with pytest.raises(InvalidInput):
        Property("Value", "Значение", type=kind).parse("value", text)  # type: ignore[arg-type]
