"""Conformance: the answer envelope (REFERENCE 1.3-1.5) — success and error shapes, statuses, PHP quirks."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from tests.sandbox.conftest import LiveSandbox

JSON_TYPE = "application/json; charset=utf-8"
ISO_MSK = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+03:00$")
TIME_KEYS = {"start", "finish", "duration", "processing", "date_start", "date_finish"}


def assert_time_block(block: dict[str, Any], *, operating: bool) -> None:
    expected = TIME_KEYS | ({"operating", "operating_reset_at"} if operating else set())
    assert set(block) == expected, block
    for key in ("start", "finish", "duration", "processing"):
        assert isinstance(block[key], float), (key, block[key])
    assert block["start"] <= block["finish"]
    assert abs(block["duration"] - (block["finish"] - block["start"])) < 1e-6
    assert 0 <= block["processing"] <= block["duration"] + 1e-3
    for key in ("date_start", "date_finish"):
        assert ISO_MSK.match(block[key]), block[key]
    # date_start is the same instant as start, in the portal's +03:00 zone, to the second
    assert datetime.fromisoformat(block["date_start"]).timestamp() == int(block["start"])
    assert datetime.fromisoformat(block["date_finish"]).timestamp() == int(block["finish"])
    if operating:
        assert isinstance(block["operating"], float)
        assert isinstance(block["operating_reset_at"], int)


def assert_error(response: Any, status: int, code: str, description: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSON_TYPE
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == code
    assert isinstance(body["error_description"], str) and body["error_description"]
    if description is not None:
        assert body["error_description"] == description
    return body


def test_success_envelope(sandbox: LiveSandbox) -> None:
    before = time.time()
    response = sandbox.call("user.current")
    after = time.time()
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON_TYPE
    body = response.json()
    assert set(body) == {"result", "time"}
    assert body["result"]["ID"] == "1"
    assert_time_block(body["time"], operating=False)
    assert before - 1 <= body["time"]["start"] <= after + 1
    # webhooks are not applications: no application header
    assert "X-Bitrix-Rest-Application" not in response.headers


def test_success_envelope_with_limits_has_operating(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True)
    body = sandbox.call("user.current").json()
    assert_time_block(body["time"], operating=True)
    assert body["time"]["operating"] > 0
    assert abs(body["time"]["operating_reset_at"] - (body["time"]["start"] + 600)) <= 2


def test_list_envelope_total_and_next(sandbox: LiveSandbox) -> None:
    for i in range(51):
        sandbox.control("POST", "/_sandbox/users", {"name": f"U{i}"})
    first = sandbox.call("user.get").json()
    assert set(first) == {"result", "next", "total", "time"}
    assert len(first["result"]) == 50
    assert first["next"] == 50
    assert first["total"] == 53
    assert isinstance(first["next"], int) and isinstance(first["total"], int)
    last = sandbox.call("user.get", {"start": 50}).json()
    assert set(last) == {"result", "total", "time"}  # no next on the last page
    assert len(last["result"]) == 3
    assert last["total"] == 53


def test_list_envelope_single_page_has_total_no_next(sandbox: LiveSandbox) -> None:
    body = sandbox.call("user.get").json()
    assert body["total"] == 2
    assert "next" not in body


def test_empty_result_is_a_json_list(sandbox: LiveSandbox) -> None:
    response = sandbox.call("user.get", {"filter": {"ID": 999}})
    assert response.text.startswith('{"result":[],')
    assert response.json()["total"] == 0


def test_empty_map_serializes_as_list_in_batch(sandbox: LiveSandbox) -> None:
    body = sandbox.call("batch", {"cmd": {"a": "user.current"}}).json()
    assert body["result"]["result_error"] == []
    assert body["result"]["result_total"] == []
    assert body["result"]["result_next"] == []


def test_php_json_unit() -> None:
    from b24bridge.sandbox.wire import php_json

    assert php_json({}) == []
    assert php_json({"0": "a", "1": "b"}) == ["a", "b"]
    assert php_json({"1": "a", "2": "b"}) == {"1": "a", "2": "b"}
    assert php_json({"x": {}, "y": [{}]}) == {"x": [], "y": [[]]}


def test_unicode_is_not_escaped(sandbox: LiveSandbox) -> None:
    sandbox.control("POST", "/_sandbox/users", {"name": "Мария"})
    response = sandbox.call("user.get", {"filter": {"ID": 101}})
    assert "Мария" in response.content.decode("utf-8")


# --- errors and statuses (REFERENCE 1.5) -------------------------------------------------------------------


def test_401_no_auth_found(sandbox: LiveSandbox) -> None:
    assert_error(sandbox.http.get("/rest/1/wrongcode/user.current"), 401, "NO_AUTH_FOUND", "Wrong authorization data")
    assert_error(sandbox.http.get("/rest/user.current"), 401, "NO_AUTH_FOUND")


def test_401_invalid_token(sandbox: LiveSandbox) -> None:
    assert_error(sandbox.http.get("/rest/user.current", params={"auth": "f" * 32}), 401, "invalid_token")


def test_403_insufficient_scope(sandbox: LiveSandbox) -> None:
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 1, "scopes": ["crm"]})
    response = sandbox.http.post(hook["url"] + "user.get", json={})
    assert_error(
        response,
        403,
        "insufficient_scope",
        "The request requires higher privileges than provided by the webhook token",
    )
    # basic-scope methods stay available to every webhook
    assert sandbox.http.post(hook["url"] + "user.current", json={}).status_code == 200


def test_403_insufficient_scope_for_crm(sandbox: LiveSandbox) -> None:
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 1, "scopes": ["user"]})
    assert_error(sandbox.http.post(hook["url"] + "crm.contact.list", json={}), 403, "insufficient_scope")


def test_404_method_not_found(sandbox: LiveSandbox) -> None:
    assert_error(sandbox.call("crm.nothing.here"), 404, "ERROR_METHOD_NOT_FOUND", "Method not found!")


def test_404_for_malformed_rest_path(sandbox: LiveSandbox) -> None:
    assert_error(sandbox.http.get("/rest/1/user.current"), 404, "ERROR_METHOD_NOT_FOUND")


def test_503_query_limit_exceeded(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, burst=1, drain_per_second=0.001)
    assert sandbox.call("user.current").status_code == 200
    assert_error(sandbox.call("user.current"), 503, "QUERY_LIMIT_EXCEEDED", "Too many requests")


def test_429_operation_time_limit(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, method_costs={"user.current": 10}, operating_limit=5)
    assert sandbox.call("user.current").status_code == 200
    assert_error(
        sandbox.call("user.current"), 429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."
    )


def test_500_internal_server_error(sandbox: LiveSandbox) -> None:
    sandbox.control("POST", "/_sandbox/faults", {"error_500_rate": 1.0})
    assert_error(sandbox.call("user.current"), 500, "INTERNAL_SERVER_ERROR", "Internal server error")


def test_batch_length_exceeded_is_400(sandbox: LiveSandbox) -> None:
    cmd = {f"c{i}": "user.current" for i in range(51)}
    assert_error(sandbox.call("batch", {"cmd": cmd}), 400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")


def test_expired_webhook_is_401(sandbox: LiveSandbox) -> None:
    now = sandbox.control("POST", "/_sandbox/clock", {"advance": 0})["now"]
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 1, "scopes": ["user"], "expires_at": now + 60})
    assert sandbox.http.post(hook["url"] + "user.current", json={}).status_code == 200
    sandbox.control("POST", "/_sandbox/clock", {"advance": 61})
    assert_error(sandbox.http.post(hook["url"] + "user.current", json={}), 401, "NO_AUTH_FOUND")
