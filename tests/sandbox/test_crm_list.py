"""crm.*.list: filter prefixes, order, select and pagination over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.conftest import LiveSandbox


def body(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def ids(sandbox: LiveSandbox, flt: dict[str, Any], order: Any = None) -> list[int]:
    params: dict[str, Any] = {"filter": flt, "select": ["ID"]}
    if order is not None:
        params["order"] = order
    return [int(r["ID"]) for r in body(sandbox.call("crm.contact.list", params))["result"]]


@pytest.fixture
def people(sandbox: LiveSandbox) -> LiveSandbox:
    for name, last, assigned, phone in [("Ivan", "Petrov", 1, "+7 111"), ("Inna", "Kuz", 2, "+7 222"),
                                        ("Artem", "Isaev", 1, None), ("Bob", "", 2, "+7 111")]:  # fmt: skip
        fields: dict[str, Any] = {"NAME": name, "LAST_NAME": last, "ASSIGNED_BY_ID": assigned}
        if phone:
            fields["PHONE"] = [{"VALUE": phone, "VALUE_TYPE": "WORK"}]
        body(sandbox.call("crm.contact.add", {"fields": fields}))
    return sandbox


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"NAME": "ivan"}, [1]),
        ({">ID": 2}, [3, 4]),
        ({">=ID": "2"}, [2, 3, 4]),
        ({"<ID": 3}, [1, 2]),
        ({"<=ID": 3}, [1, 2, 3]),
        ({"@ASSIGNED_BY_ID": [2]}, [2, 4]),
        ({"!@ID": [1, 2]}, [3, 4]),
        ({"%NAME": "nn"}, [2]),
        ({"=%NAME": "I%"}, [1, 2]),
        ({"%=LAST_NAME": "%ev"}, [3]),
        ({"!=LAST_NAME": ""}, [1, 2, 3]),
        ({"!NAME": "Bob"}, [1, 2, 3]),
        ({"PHONE": "+7 111"}, [1, 4]),
        ({"PHONE": "+7 11"}, []),
    ],
)
def test_filter_prefixes(people: LiveSandbox, flt: dict[str, Any], expected: list[int]) -> None:
    assert ids(people, flt) == expected


def test_order_and_select(people: LiveSandbox) -> None:
    assert ids(people, {}, {"NAME": "DESC"}) == [1, 2, 4, 3]
    assert ids(people, {}, {"ASSIGNED_BY_ID": "ASC", "ID": "DESC"}) == [3, 1, 4, 2]
    rows = body(people.call("crm.contact.list", {"select": ["NAME", "PHONE"], "filter": {"ID": 1}}))["result"]
    assert rows == [{"ID": "1", "NAME": "Ivan", "PHONE": [{"ID": "1", "VALUE_TYPE": "WORK", "VALUE": "+7 111",
                                                           "TYPE_ID": "PHONE"}]}]  # fmt: skip
    default = body(people.call("crm.contact.list", {"filter": {"ID": 1}}))["result"][0]
    assert "PHONE" not in default and default["NAME"] == "Ivan" and default["ASSIGNED_BY_ID"] == "1"


def test_bad_filter_and_order(people: LiveSandbox) -> None:
    response = people.call("crm.contact.list", {"filter": "x"})
    assert response.status_code == 400 and response.json()["error_description"] == "Parameter 'filter' must be array."
    response = people.call("crm.contact.list", {"order": "x"})
    assert response.status_code == 400 and response.json()["error_description"] == "Parameter 'order' must be array."


def test_pagination_120(sandbox: LiveSandbox) -> None:
    for i in range(120):
        body(sandbox.call("crm.company.add", {"fields": {"TITLE": f"C{i}"}}))
    first = body(sandbox.call("crm.company.list", {"select": ["ID"]}))
    assert len(first["result"]) == 50 and first["next"] == 50 and first["total"] == 120
    form = sandbox.http.post(f"{sandbox.webhook_url}crm.company.list", data={"start": "100", "select[]": "ID"})
    last = body(form)
    assert len(last["result"]) == 20 and "next" not in last and last["total"] == 120
    assert last["result"][0] == {"ID": "101"}
    fast = body(sandbox.call("crm.company.list", {"start": -1, "filter": {">ID": 60}, "order": {"ID": "ASC"}}))
    assert len(fast["result"]) == 50 and fast["total"] == 0 and "next" not in fast
    assert fast["result"][0]["ID"] == "61"


def test_deal_list_date_filter(sandbox: LiveSandbox) -> None:
    for day in ("2024-01-10", "2024-02-10", "2024-03-10"):
        body(sandbox.call("crm.deal.add", {"fields": {"BEGINDATE": day}}))
    found = body(sandbox.call("crm.deal.list", {"filter": {">=BEGINDATE": "2024-02-01"}, "select": ["ID"]}))
    assert [r["ID"] for r in found["result"]] == ["2", "3"] and found["total"] == 2
