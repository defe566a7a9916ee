"""PHP bracket encoding of batch commands, checked against PHP's rules and by a round trip through the portal."""

from __future__ import annotations

from urllib.parse import parse_qsl

from b24bridge.bitrix import Portal
from b24bridge.bitrix.encoding import batch_command, php_query


def test_nesting_lists_booleans_and_none() -> None:
    query = php_query(
        {
            "fields": {"NAME": "Ann", "PHONE": [{"VALUE": "+1", "VALUE_TYPE": "WORK"}]},
            "a": True,
            "b": False,
            "c": None,
            "select": ["ID", "NAME"],
        }
    )
    assert parse_qsl(query) == [
        ("fields[NAME]", "Ann"),
        ("fields[PHONE][0][VALUE]", "+1"),
        ("fields[PHONE][0][VALUE_TYPE]", "WORK"),
        ("a", "1"),
        ("b", "0"),
        ("select[0]", "ID"),
        ("select[1]", "NAME"),
    ]


def test_special_characters_are_percent_encoded() -> None:
    query = php_query({"v": "a&b=c[]?%# ü"})
    assert "&" not in query.replace("&", "", 0) or query.count("&") == 0
    assert query == "v=a%26b%3Dc%5B%5D%3F%25%23%20%C3%BC"
    assert batch_command("user.current", None) == "user.current"
    assert batch_command("crm.contact.get", {"id": 5}) == "crm.contact.get?id=5"


async def test_round_trip_through_the_portal(portal: Portal) -> None:
    tricky = {
        "NAME": "Ann & Bob = [x] ? 100% #1",
        "LAST_NAME": "Ли Юнь",
        "COMMENTS": "line1\nline2 + plus",
        "PHONE": [{"VALUE": "+1 555 0100", "VALUE_TYPE": "WORK"}, {"VALUE": "+1 555 0101", "VALUE_TYPE": "HOME"}],
        "OPENED": False,
        "UF_CRM_EMPTY": None,
    }
    results = await portal.batch(
        {"add": ("crm.contact.add", {"fields": tricky}), "get": ("crm.contact.get", {"id": "$result[add]"})}
    )
    record = results["get"].unwrap()
    assert record["ID"] == str(results["add"].unwrap())
    assert record["NAME"] == tricky["NAME"]
    assert record["LAST_NAME"] == tricky["LAST_NAME"]
    assert record["COMMENTS"] == tricky["COMMENTS"]
    assert [p["VALUE"] for p in record["PHONE"]] == ["+1 555 0100", "+1 555 0101"]
    assert record["OPENED"] == "N"
