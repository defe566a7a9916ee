"""Conformance: the two portal limits (REFERENCE 2.1, 2.2) — the request leaky bucket and the operating-time budget.

Timing-sensitive assertions measure the wall time they actually took and allow exactly the drain that time
explains (plus one request of slack), so a slow, noisy machine widens the window but a wrong bucket still fails.
"""

from __future__ import annotations

import math
import time
from urllib.parse import urlsplit

import httpx

from tests.sandbox.conftest import LiveSandbox


def _get(sandbox: LiveSandbox, method: str = "user.current") -> int:
    return sandbox.http.get(f"{sandbox.webhook_url}{method}").status_code


def _until_refused(sandbox: LiveSandbox, limit: int) -> tuple[int, float]:
    """Call until the first 503; return how many were admitted and how long it took."""
    started = time.monotonic()
    admitted = 0
    for _ in range(limit):
        status = _get(sandbox)
        if status == 503:
            break
        assert status == 200
        admitted += 1
    return admitted, time.monotonic() - started


def test_cloud_plan_values(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, plan="cloud")
    config = sandbox.info["config"]
    assert (config["burst"], config["drain_per_second"], config["operating_limit"]) == (50, 2.0, 480.0)


def test_cloud_burst_of_50_then_503(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, plan="cloud")
    admitted, elapsed = _until_refused(sandbox, 200)
    assert 50 <= admitted <= 50 + math.ceil(2.0 * elapsed) + 1, (admitted, elapsed)
    body = sandbox.call("user.current").json()
    assert body == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}


def test_enterprise_plan_burst_250(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, plan="enterprise")
    config = sandbox.info["config"]
    assert (config["burst"], config["drain_per_second"]) == (250, 5.0)
    admitted, elapsed = _until_refused(sandbox, 600)
    assert 250 <= admitted <= 250 + math.ceil(5.0 * elapsed) + 1, (admitted, elapsed)


def test_exact_burst_with_negligible_drain(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, burst=7, drain_per_second=0.0001)
    statuses = [_get(sandbox) for _ in range(10)]
    assert statuses == [200] * 7 + [503] * 3


def test_refused_requests_do_not_fill_the_bucket(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, burst=2, drain_per_second=0.5)
    assert [_get(sandbox) for _ in range(2)] == [200, 200]
    for _ in range(20):
        assert _get(sandbox) == 503
    # two seconds of (sandbox) time drain one request; the 20 refusals added nothing
    sandbox.control("POST", "/_sandbox/clock", {"advance": 2.0})
    assert [_get(sandbox), _get(sandbox)] == [200, 503]


def test_drain_two_per_second_real_time(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, burst=10, drain_per_second=2.0)
    started = time.monotonic()
    while _get(sandbox) != 503:
        assert time.monotonic() - started < 10
    # Not synchronisation: this test is about the bucket draining in *real* time, as the portal's does, so a real
    # second must pass (test_drain_follows_the_sandbox_clock covers the same drain on the controllable clock).
    time.sleep(1.0)
    refused_at = time.monotonic()
    passed = 0
    while _get(sandbox) == 200:
        passed += 1
        assert passed < 20
    waited = time.monotonic() - refused_at + 1.0  # includes the sleep
    # ~2 pass per second of waiting; a slow machine adds at most its own measured extra time
    assert 2 <= passed <= math.floor(2.0 * waited) + 1, (passed, waited)


def test_drain_follows_the_sandbox_clock(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, burst=10, drain_per_second=2.0)
    t0 = time.monotonic()
    while _get(sandbox) != 503:
        pass
    sandbox.control("POST", "/_sandbox/clock", {"advance": 1.0})
    passed = 0
    while _get(sandbox) == 200:
        passed += 1
        assert passed < 20
    elapsed = time.monotonic() - t0
    assert 2 <= passed <= 2 + math.ceil(2.0 * elapsed) + 1, (passed, elapsed)


def test_batch_counts_as_one_request(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, burst=3, drain_per_second=0.0001)
    cmd = {f"c{i}": "user.current" for i in range(50)}
    for _ in range(3):
        response = sandbox.call("batch", {"cmd": cmd})
        assert response.status_code == 200
        assert len(response.json()["result"]["result"]) == 50
    assert sandbox.call("batch", {"cmd": cmd}).status_code == 503
    assert _get(sandbox) == 503


def test_limits_are_per_client_ip(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, burst=2, drain_per_second=0.0001)
    assert [_get(sandbox) for _ in range(3)] == [200, 200, 503]
    url = urlsplit(sandbox.webhook_url)
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, base_url=f"http://{url.netloc}", timeout=10) as other:
        assert [other.get(f"{url.path}user.current").status_code for _ in range(3)] == [200, 200, 503]
    state = sandbox.control("GET", "/_sandbox/limits")
    assert set(state["buckets"]) == {"127.0.0.1", "127.0.0.2"}
    assert state["enabled"] is True


def test_limits_are_per_portal_not_per_webhook(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, burst=2, drain_per_second=0.0001)
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 1, "scopes": ["user"]})
    assert _get(sandbox) == 200
    assert sandbox.http.get(hook["url"] + "user.current").status_code == 200
    assert sandbox.http.get(hook["url"] + "user.current").status_code == 503


def test_no_limits_passes_300_rapid_calls(sandbox: LiveSandbox) -> None:
    assert sandbox.info["config"]["limits_enabled"] is False
    statuses = {_get(sandbox) for _ in range(300)}
    assert statuses == {200}
    body = sandbox.call("user.current").json()
    assert "operating" not in body["time"]


# --- operating time (REFERENCE 2.2) -------------------------------------------------------------------------


def test_operating_time_budget(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, method_costs={"user.current": 100}, operating_limit=250)
    first = sandbox.call("user.current").json()["time"]
    second = sandbox.call("user.current").json()["time"]
    third = sandbox.call("user.current")  # 200 -> 300: crosses the limit, still allowed
    assert third.status_code == 200
    third_time = third.json()["time"]
    assert 100 <= first["operating"] < 101
    assert 200 <= second["operating"] < 201
    assert 300 <= third_time["operating"] < 301
    assert isinstance(first["operating_reset_at"], int)
    assert abs(first["operating_reset_at"] - (first["start"] + 600)) <= 2
    assert first["operating_reset_at"] == second["operating_reset_at"] == third_time["operating_reset_at"]

    blocked = sandbox.call("user.current")
    assert blocked.status_code == 429
    assert blocked.json() == {
        "error": "OPERATION_TIME_LIMIT",
        "error_description": "Method is blocked due to operation time limit.",
    }
    # blocked calls do not spend; other methods have their own budget
    other = sandbox.call("profile")
    assert other.status_code == 200
    assert other.json()["time"]["operating"] < 1
    # other webhooks (other callers) have their own budget too
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 1, "scopes": ["user"]})
    assert sandbox.http.get(hook["url"] + "user.current").status_code == 200

    view = sandbox.control("GET", "/_sandbox/limits")
    used = {(o["caller"], o["method"]): o["used"] for o in view["operating"]}
    assert any(m == "user.current" and u >= 300 for (_, m), u in used.items())

    sandbox.control("POST", "/_sandbox/clock", {"advance": 601})
    again = sandbox.call("user.current")
    assert again.status_code == 200
    assert 100 <= again.json()["time"]["operating"] < 101


def test_operating_budget_within_batch_counts_per_command(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, method_costs={"user.current": 100}, operating_limit=150)
    body = sandbox.call("batch", {"cmd": {"a": "user.current", "b": "user.current", "c": "user.current"}}).json()
    result = body["result"]
    assert set(result["result"]) == {"a", "b"}
    assert result["result_error"] == {
        "c": {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked due to operation time limit."}
    }
    assert result["result_time"]["b"]["operating"] >= 200
    assert "operating" not in body["time"]  # the outer batch call is not counted itself


def test_operating_window_config(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, method_costs={"user.current": 10}, operating_limit=5, operating_window=60)
    first = sandbox.call("user.current").json()["time"]
    assert abs(first["operating_reset_at"] - (first["start"] + 60)) <= 2
    assert sandbox.call("user.current").status_code == 429
    sandbox.control("POST", "/_sandbox/clock", {"advance": 61})
    assert sandbox.call("user.current").status_code == 200
