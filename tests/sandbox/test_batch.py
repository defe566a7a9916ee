"""Conformance: ``batch`` (REFERENCE 3, docs settings/how-to-call-rest-api/batch.md, data-encoding.md)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from tests.sandbox.conftest import LiveSandbox

SECTIONS = {"result", "result_error", "result_total", "result_next", "result_time"}
TIME_KEYS = {"start", "finish", "duration", "processing", "date_start", "date_finish"}


def batch(sandbox: LiveSandbox, cmd: Any, halt: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"cmd": cmd}
    if halt is not None:
        params["halt"] = halt
    response = sandbox.call("batch", params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"result", "time"}
    assert set(body["result"]) == SECTIONS
    found: dict[str, Any] = body["result"]
    return found


def test_batch_of_system_methods(sandbox: LiveSandbox) -> None:
    result = batch(sandbox, {"me": "user.current", "prof": "profile", "users": "user.get?filter[ID]=2"})
    assert result["result"]["me"]["ID"] == "1"
    assert result["result"]["prof"]["ID"] == "1"
    assert [u["ID"] for u in result["result"]["users"]] == ["2"]
    assert result["result_error"] == []
    assert result["result_total"] == {"users": 1}
    assert result["result_next"] == []
    assert set(result["result_time"]) == {"me", "prof", "users"}
    for block in result["result_time"].values():
        assert set(block) == TIME_KEYS
        assert block["date_start"].endswith("+03:00")


def test_result_next_for_list_commands(sandbox: LiveSandbox) -> None:
    for i in range(50):
        sandbox.control("POST", "/_sandbox/users", {"name": f"U{i}"})
    result = batch(sandbox, {"p1": "user.get", "p2": "user.get?start=50"})
    assert result["result_total"] == {"p1": 52, "p2": 52}
    assert result["result_next"] == {"p1": 50}
    assert len(result["result"]["p1"]) == 50
    assert len(result["result"]["p2"]) == 2


def test_fifty_commands_allowed_fifty_one_refused(sandbox: LiveSandbox) -> None:
    result = batch(sandbox, {f"c{i}": "user.current" for i in range(50)})
    assert len(result["result"]) == 50
    response = sandbox.call("batch", {"cmd": {f"c{i}": "user.current" for i in range(51)}})
    assert response.status_code == 400
    assert response.json() == {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"}


def test_nested_batch_not_allowed(sandbox: LiveSandbox) -> None:
    result = batch(sandbox, {"inner": "batch?cmd[x]=user.current", "me": "user.current"})
    assert result["result_error"] == {
        "inner": {
            "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "error_description": "Method is not allowed for batch usage",
        }
    }
    assert result["result"]["me"]["ID"] == "1"
    assert set(result["result_time"]) == {"me"}


def test_errors_inside_batch_keep_outer_200(sandbox: LiveSandbox) -> None:
    result = batch(sandbox, {"bad": "no.such.method", "ok": "user.current"})
    assert result["result_error"] == {
        "bad": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
    }
    assert list(result["result"]) == ["ok"]


def test_scope_is_checked_per_command(sandbox: LiveSandbox) -> None:
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 1, "scopes": ["crm"]})
    response = sandbox.http.post(hook["url"] + "batch", json={"cmd": {"u": "user.get", "me": "user.current"}})
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["result_error"]["u"]["error"] == "insufficient_scope"
    assert result["result"]["me"]["ID"] == "1"


def test_halt_0_runs_everything(sandbox: LiveSandbox) -> None:
    result = batch(sandbox, {"a": "user.current", "bad": "nope.nope", "c": "profile"}, halt=0)
    assert set(result["result"]) == {"a", "c"}
    assert set(result["result_error"]) == {"bad"}
    assert set(result["result_time"]) == {"a", "c"}


def test_halt_1_stops_at_first_failure(sandbox: LiveSandbox) -> None:
    result = batch(sandbox, {"a": "user.current", "bad": "nope.nope", "c": "profile", "d": "user.get"}, halt=1)
    assert list(result["result"]) == ["a"]
    assert list(result["result_error"]) == ["bad"]
    assert list(result["result_time"]) == ["a"]
    assert result["result_total"] == []  # d (a list command) never ran
    for section in result.values():
        assert "c" not in section and "d" not in section


@pytest.mark.parametrize("halt", ["true", "1", True])
def test_halt_spellings(sandbox: LiveSandbox, halt: Any) -> None:
    response = sandbox.call("batch", {"halt": halt, "cmd": {"bad": "nope.nope", "c": "profile"}})
    assert response.json()["result"]["result"] == []


def test_result_reference_to_a_field(sandbox: LiveSandbox) -> None:
    result = batch(sandbox, {"me": "user.current", "same": "user.get?filter[ID]=$result[me][ID]"})
    assert [u["ID"] for u in result["result"]["same"]] == ["1"]


def test_result_reference_into_a_list(sandbox: LiveSandbox) -> None:
    result = batch(
        sandbox,
        {"find": "user.get?filter[EMAIL]=maria@sandbox.local", "again": "user.get?ID=$result[find][0][ID]"},
    )
    assert [u["ID"] for u in result["result"]["again"]] == ["2"]


def test_reference_to_missing_key_is_empty(sandbox: LiveSandbox) -> None:
    result = batch(sandbox, {"me": "user.current", "x": "user.get?filter[EMAIL]=$result[me][NOPE]"})
    assert result["result"]["x"] == []  # EMAIL = "" matches nobody


def test_list_form_cmd_gives_arrays(sandbox: LiveSandbox) -> None:
    response = sandbox.call("batch", {"cmd": ["user.current", "nope.nope", "profile"]})
    result = response.json()["result"]
    # keys 0 and 2 are not contiguous from 0..n-1 in result, so PHP keeps them as a map
    assert result["result"] == {"0": result["result"]["0"], "2": result["result"]["2"]}
    assert result["result_error"] == {
        "1": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
    }
    ok = sandbox.call("batch", {"cmd": ["user.current", "profile"]}).json()["result"]
    assert isinstance(ok["result"], list)
    assert [r["ID"] for r in ok["result"]] == ["1", "1"]
    assert isinstance(ok["result_time"], list) and len(ok["result_time"]) == 2


def test_form_encoded_batch_double_encoding(sandbox: LiveSandbox) -> None:
    """The docs' form example: the inner query string is encoded once more, ``$result[...]`` twice."""
    hook = urlsplit(sandbox.webhook_url).path
    inner_find = "user.get?" + "filter%5BEMAIL%5D=maria%40sandbox.local"
    inner_again = "user.get?ID=" + quote("$result[find][0][ID]", safe="")  # %24result%5Bfind...
    body = "halt=0&cmd[find]=" + quote(inner_find, safe="") + "&cmd[again]=" + quote(inner_again, safe="")
    assert "%2524result%255Bfind%255D" in body
    response = sandbox.http.post(
        hook + "batch", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["result_error"] == []
    assert [u["ID"] for u in result["result"]["find"]] == ["2"]
    assert [u["ID"] for u in result["result"]["again"]] == ["2"]


def test_get_query_batch(sandbox: LiveSandbox) -> None:
    hook = urlsplit(sandbox.webhook_url).path
    response = sandbox.http.get(hook + "batch", params={"cmd[a]": "user.get?filter[ID]=2", "cmd[b]": "profile"})
    result = response.json()["result"]
    assert [u["ID"] for u in result["result"]["a"]] == ["2"]
    assert result["result"]["b"]["ID"] == "1"


def test_empty_batch(sandbox: LiveSandbox) -> None:
    result = batch(sandbox, {})
    assert all(result[s] == [] for s in SECTIONS)


# --- with CRM: sequential $result chains ---------------------------------------------------------------------


def test_crm_result_chain(sandbox: LiveSandbox) -> None:
    result = batch(
        sandbox,
        {
            "add": "crm.contact.add?fields[NAME]=Ann&fields[LAST_NAME]=Lee",
            "get": "crm.contact.get?id=$result[add]",
            "upd": "crm.contact.update?id=$result[get][ID]&fields[NAME]=Anna",
            "find": "crm.contact.list?filter[LAST_NAME]=Lee&select[]=ID&select[]=NAME",
            "again": "crm.contact.get?id=$result[find][0][ID]",
        },
    )
    assert result["result_error"] == []
    new_id = result["result"]["add"]
    assert isinstance(new_id, int)
    assert str(result["result"]["get"]["ID"]) == str(new_id)
    assert result["result"]["upd"] is True
    assert result["result_total"] == {"find": 1}
    assert result["result"]["again"]["NAME"] == "Anna"


def test_crm_halt_1_later_writes_do_not_happen(sandbox: LiveSandbox) -> None:
    result = batch(
        sandbox,
        {
            "a": "crm.contact.add?fields[NAME]=One",
            "bad": "crm.contact.get?id=999999",
            "b": "crm.contact.add?fields[NAME]=Two",
        },
        halt=1,
    )
    assert list(result["result"]) == ["a"]
    assert result["result_error"]["bad"]["error"] == ""  # legacy CRM: empty code
    total = sandbox.call("crm.contact.list").json()["total"]
    assert total == 1
