"""Conformance: how a request reaches a method (REFERENCE 1.1, 1.2) — URL forms, HTTP verbs, body encodings.

Everything goes over real HTTP to a live sandbox; ``user.get`` with a filter is the probe because its answer
shows which parameters the portal understood.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlsplit

import pytest

from b24bridge.sandbox.wire import dumps_xml
from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import install


def _hook_path(sandbox: LiveSandbox) -> str:
    """``/rest/{uid}/{code}/`` of the portal's incoming webhook."""
    return urlsplit(sandbox.webhook_url).path


def _ids(body: dict[str, Any]) -> list[str]:
    return [u["ID"] for u in body["result"]]


@pytest.mark.parametrize(
    "suffix",
    ["user.current", "user.current.json", "user.current/", "user.current.json/", "USER.CURRENT", "User.Current.JSON"],
)
@pytest.mark.parametrize("verb", ["GET", "POST"])
def test_webhook_route_forms(sandbox: LiveSandbox, suffix: str, verb: str) -> None:
    response = sandbox.http.request(verb, _hook_path(sandbox) + suffix)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["ID"] == "1"


def test_webhook_route_without_trailing_slash_in_base(sandbox: LiveSandbox) -> None:
    uid, code = _hook_path(sandbox).strip("/").split("/")[1:]
    response = sandbox.http.get(f"/rest/{uid}/{code}/profile.json")
    assert response.status_code == 200
    assert response.json()["result"]["ID"] == "1"


def test_wrong_webhook_code_or_user_is_no_auth(sandbox: LiveSandbox) -> None:
    uid, code = _hook_path(sandbox).strip("/").split("/")[1:]
    for path in (f"/rest/{uid}/{'0' * len(code)}/user.current", f"/rest/2/{code}/user.current"):
        response = sandbox.http.get(path)
        assert response.status_code == 401
        assert response.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}


def test_unknown_method_is_404_method_not_found(sandbox: LiveSandbox) -> None:
    response = sandbox.call("no.such.method")
    assert response.status_code == 404
    assert response.json() == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}


def test_get_query_string_parameters(sandbox: LiveSandbox) -> None:
    response = sandbox.http.get(_hook_path(sandbox) + "user.get", params={"filter[ID]": "2"})
    assert response.status_code == 200
    assert _ids(response.json()) == ["2"]


def test_json_body(sandbox: LiveSandbox) -> None:
    assert _ids(sandbox.call("user.get", {"filter": {"ID": 2}}).json()) == ["2"]
    assert _ids(sandbox.call("user.get", {"filter": {"ID": [1, 2]}}).json()) == ["1", "2"]


def test_form_body_with_php_bracket_lists(sandbox: LiveSandbox) -> None:
    response = sandbox.http.post(
        _hook_path(sandbox) + "user.get",
        content="filter[ID][]=2&filter[ID][]=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert _ids(response.json()) == ["1", "2"]


def test_form_body_with_explicit_indexes(sandbox: LiveSandbox) -> None:
    response = sandbox.http.post(
        _hook_path(sandbox) + "user.get", data={"filter[ID][0]": "1", "filter[ID][1]": "2", "filter[ACTIVE]": "Y"}
    )
    assert _ids(response.json()) == ["1", "2"]


def test_multipart_body(sandbox: LiveSandbox) -> None:
    response = sandbox.http.post(
        _hook_path(sandbox) + "user.get",
        data={"filter[ID]": "2"},
        files={"attachment": ("note.txt", b"hello", "text/plain")},
    )
    assert response.status_code == 200, response.text
    assert _ids(response.json()) == ["2"]


def test_body_wins_over_query_string(sandbox: LiveSandbox) -> None:
    response = sandbox.http.post(_hook_path(sandbox) + "user.get?filter[ID]=1", data={"filter[ID]": "2"})
    assert _ids(response.json()) == ["2"]


def test_top_level_parameter_names_are_case_insensitive(sandbox: LiveSandbox) -> None:
    assert _ids(sandbox.call("user.get", {"FILTER": {"ID": 2}}).json()) == ["2"]
    response = sandbox.http.get(_hook_path(sandbox) + "user.get", params={"Filter[ID]": "2"})
    assert _ids(response.json()) == ["2"]


def test_invalid_json_body_is_treated_as_no_parameters(sandbox: LiveSandbox) -> None:
    response = sandbox.http.post(
        _hook_path(sandbox) + "user.get", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert _ids(response.json()) == ["1", "2"]


# --- PHP parse_str, observed through batch: sub-command query strings are parsed the same way ------------


def test_php_nesting_through_batch_echo(sandbox: LiveSandbox) -> None:
    """``a[b][c]=`` keeps the empty leaf, ``a[]`` appends, a reference to a whole map prints ``Array``."""
    response = sandbox.call(
        "batch",
        {
            "cmd": {
                "u": "user.get?filter[ID][]=2&filter[ID][]=1&filter[EMAIL]=",
                "v": "user.get?filter[ID]=$result[u][0][ID]",
            }
        },
    )
    body = response.json()["result"]
    # An empty EMAIL filter matches nobody: the blank value was kept rather than dropped.
    assert body["result"]["u"] == []
    assert body["result_error"] == []


def test_parse_php_pairs_unit() -> None:
    from b24bridge.sandbox.wire import parse_php_query

    assert parse_php_query("filter[ID][]=1&filter[ID][]=2") == {"filter": {"ID": ["1", "2"]}}
    assert parse_php_query("a[b][c]=") == {"a": {"b": {"c": ""}}}
    assert parse_php_query("a[]=x&a[]=y&b=1") == {"a": ["x", "y"], "b": "1"}
    assert parse_php_query("a[5]=x&a[]=y") == {"a": {"5": "x", "6": "y"}}
    assert parse_php_query("fields[PHONE][0][VALUE]=1&fields[PHONE][0][VALUE_TYPE]=WORK") == {
        "fields": {"PHONE": [{"VALUE": "1", "VALUE_TYPE": "WORK"}]}
    }
    assert parse_php_query("x=%2B1%26y") == {"x": "+1&y"}


# --- OAuth: ``auth`` in the query, the form or the JSON body -----------------------------------------------


def test_oauth_without_auth_is_no_auth_found(sandbox: LiveSandbox) -> None:
    response = sandbox.http.post("/rest/user.current", json={})
    assert response.status_code == 401
    assert response.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
    assert "time" not in response.json()


@pytest.mark.parametrize("where", ["query", "form", "json"])
def test_oauth_unknown_token_is_invalid_token(sandbox: LiveSandbox, where: str) -> None:
    response = _oauth_call(sandbox, "user.current", "0" * 32, where)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def _oauth_call(sandbox: LiveSandbox, method: str, access_token: str, where: str) -> Any:
    if where == "query":
        return sandbox.http.get(f"/rest/{method}", params={"auth": access_token})
    if where == "form":
        return sandbox.http.post(f"/rest/{method}.json", data={"auth": access_token})
    return sandbox.http.post(f"/rest/{method}/", json={"auth": access_token})


def installed_access_token(sandbox: LiveSandbox) -> str:
    """Install the pre-registered application; the installer's access token."""
    token: str = install(sandbox, sandbox.client_id)["tokens"]["access_token"]
    return token


@pytest.mark.parametrize("where", ["query", "form", "json"])
def test_oauth_access_token_everywhere(sandbox: LiveSandbox, where: str) -> None:
    token = installed_access_token(sandbox)
    response = _oauth_call(sandbox, "user.current", token, where)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["ID"] == "1"
    assert response.headers["X-Bitrix-Rest-Application"] == sandbox.client_id


def test_oauth_expired_token(sandbox: LiveSandbox) -> None:
    token = installed_access_token(sandbox)
    assert sandbox.control("POST", "/_sandbox/tokens/expire", {"access_token": token})["expired"] == 1
    response = _oauth_call(sandbox, "user.current", token, "json")
    assert response.status_code == 401
    assert response.json() == {"error": "expired_token", "error_description": "The access token provided has expired"}


def test_oauth_batch_auth_on_outer_call_only(sandbox: LiveSandbox) -> None:
    token = installed_access_token(sandbox)
    response = sandbox.http.post(
        "/rest/batch", json={"auth": token, "cmd": {"me": "user.current", "scopes": "scope"}, "halt": 0}
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["result_error"] == []
    assert result["result"]["me"]["ID"] == "1"
    assert "crm" in result["result"]["scopes"]


# --- the .xml answer format (REFERENCE 1.1) ----------------------------------------------------------------


def _xml(response: Any) -> Any:
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.text.startswith('<?xml version="1.0" encoding="utf-8"?><response>')
    return ET.fromstring(response.content)


def test_xml_suffix_answers_xml_with_response_root(sandbox: LiveSandbox) -> None:
    for path in ("user.current.xml", "user.current.xml/", "USER.CURRENT.XML"):
        response = sandbox.http.get(_hook_path(sandbox) + path)
        assert response.status_code == 200, response.text
        root = _xml(response)
        assert root.tag == "response"
        assert [child.tag for child in root] == ["result", "time"]
        assert root.findtext("result/ID") == "1"
        assert root.findtext("result/NAME") == "Admin"
        assert float(root.findtext("time/duration") or "x") >= 0
        assert root.findtext("time/date_start", "").startswith("20")


def test_xml_lists_become_items_and_values_are_escaped(sandbox: LiveSandbox) -> None:
    for name in ("A&B <one>", "Two"):
        assert sandbox.call("crm.contact.add", {"fields": {"NAME": name, "OPENED": "Y"}}).status_code == 200
    response = sandbox.http.post(
        _hook_path(sandbox) + "crm.contact.list.xml",
        json={"select": ["ID", "NAME", "PHONE"], "order": {"ID": "ASC"}},
    )
    assert response.status_code == 200
    root = _xml(response)
    assert [child.tag for child in root] == ["result", "total", "time"]
    items = root.findall("result/item")
    assert [i.findtext("NAME") for i in items] == ["A&B <one>", "Two"]
    assert "A&amp;B &lt;one&gt;" in response.text
    assert root.findtext("total") == "2"
    # The same call without a suffix (or with .json) stays JSON.
    for path in ("crm.contact.list", "crm.contact.list.json"):
        plain = sandbox.http.post(_hook_path(sandbox) + path, json={"select": ["ID"]})
        assert plain.headers["content-type"] == "application/json; charset=utf-8"
        assert plain.json()["total"] == 2


def test_xml_errors_and_booleans(sandbox: LiveSandbox) -> None:
    missing = sandbox.http.get(_hook_path(sandbox) + "no.such.method.xml")
    assert missing.status_code == 404
    root = _xml(missing)
    assert [(c.tag, c.text) for c in root] == [
        ("error", "ERROR_METHOD_NOT_FOUND"),
        ("error_description", "Method not found!"),
    ]
    bad_hook = sandbox.http.get("/rest/1/wrongcode/profile.xml")
    assert bad_hook.status_code == 401
    assert _xml(bad_hook).findtext("error") == "NO_AUTH_FOUND"
    profile = _xml(sandbox.http.get(_hook_path(sandbox) + "profile.xml"))
    assert profile.findtext("result/ADMIN") == "1"  # PHP prints true as 1


def test_dumps_xml_unit() -> None:
    body = {"result": {"a": [1, {"b": None, "c": False}], "7x": "y", "x y": "\x01z"}, "total": 0}
    assert dumps_xml(body) == (
        b'<?xml version="1.0" encoding="utf-8"?><response><result>'
        b"<a><item>1</item><item><b></b><c></c></item></a><item>y</item><x_y>z</x_y>"
        b"</result><total>0</total></response>"
    )
