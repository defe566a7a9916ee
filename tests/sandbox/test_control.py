"""The control API (``/_sandbox/``): reset, configuration and its validation, users, webhooks, clock, limits view;
and the ``b24bridge sandbox`` command as a real process."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.livehttp import free_socket
from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import assert_insufficient_scope


def test_info(sandbox: LiveSandbox) -> None:
    info = sandbox.info
    assert info["base_url"] == f"http://127.0.0.1:{sandbox.port}"
    assert info["client_endpoint"] == f"{info['base_url']}/rest/"
    assert info["server_endpoint"] == f"{info['base_url']}/oauth/rest/"
    assert re.fullmatch(r"[0-9a-f]{32}", info["member_id"])
    assert [u["id"] for u in info["users"]] == [1, 2]
    assert len(info["webhooks"]) == 1
    assert info["webhooks"][0]["url"].startswith(info["base_url"] + "/rest/1/")
    assert info["apps"][0]["client_id"] == sandbox.client_id
    assert info["config"]["limits_enabled"] is False


def test_crm_counts(sandbox: LiveSandbox) -> None:
    # What a portal really holds, read without touching its limits (bench/client_throughput.py counts with it).
    before = sandbox.control("GET", "/_sandbox/crm/counts")["counts"]
    for name in ("Ann", "Bob"):
        assert sandbox.call("crm.contact.add", {"fields": {"NAME": name}}).status_code == 200
    after = sandbox.control("GET", "/_sandbox/crm/counts")["counts"]
    assert after["CONTACT"] == before.get("CONTACT", 0) + 2


def test_reset_returns_the_portal_to_its_start(sandbox: LiveSandbox) -> None:
    old_hook = sandbox.webhook_url
    extra = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 1, "scopes": ["user"]})
    sandbox.control("POST", "/_sandbox/users", {"name": "Temp"})
    sandbox.control("POST", "/_sandbox/faults", {"error_500_rate": 1.0})
    sandbox.control("POST", "/_sandbox/clock", {"advance": 3600})
    sandbox.control("POST", "/_sandbox/config", {"limits_enabled": True, "burst": 3, "method_costs": {"x": 1}})

    info = sandbox.control("POST", "/_sandbox/reset")
    assert [u["id"] for u in info["users"]] == [1, 2]
    assert len(info["webhooks"]) == 1
    config = info["config"]
    assert (config["limits_enabled"], config["burst"], config["method_costs"]) == (False, 50, {})
    assert sandbox.control("GET", "/_sandbox/faults")["spec"]["error_500_rate"] == 0.0
    assert sandbox.control("POST", "/_sandbox/clock", {"advance": 0})["offset"] == 0.0
    # credentials of the old world are gone
    assert sandbox.http.post(extra["url"] + "user.current", json={}).status_code == 401
    assert sandbox.http.post(old_hook + "user.current", json={}).status_code == 401
    new_hook = info["webhooks"][0]["url"]
    assert sandbox.http.post(new_hook + "user.current", json={}).status_code == 200


def test_config_changes_apply(sandbox: LiveSandbox) -> None:
    info = sandbox.control("POST", "/_sandbox/config", {"limits_enabled": True, "plan": "enterprise"})
    assert (info["config"]["plan"], info["config"]["burst"], info["config"]["drain_per_second"]) == (
        "enterprise",
        250,
        5.0,
    )
    info = sandbox.control("POST", "/_sandbox/config", {"burst": 9, "operating_limit": 12.5})
    assert (info["config"]["burst"], info["config"]["operating_limit"]) == (9, 12.5)
    assert info["config"]["plan"] == "enterprise"  # only the keys given change


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"plan": "gold"}, "plan must be cloud or enterprise"),
        ({"burst": 0}, "burst must be positive"),
        ({"drain_per_second": -1}, "drain_per_second must be positive"),
        ({"operating_limit": 0}, "operating_limit must be positive"),
        ({"access_token_ttl": 0}, "access_token_ttl must be at least 1 second"),
        ({"burst": "many"}, "burst"),
        ({"limits_enabled": "false"}, "limits_enabled must be true or false"),
        ({"method_costs": ["user.current"]}, "method_costs"),
    ],
)
def test_config_validation(sandbox: LiveSandbox, settings: dict[str, Any], message: str) -> None:
    response = sandbox.http.post("/_sandbox/config", json=settings)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    config = sandbox.control("GET", "/_sandbox/")["config"]
    assert (config["plan"], config["burst"], config["limits_enabled"]) == ("cloud", 50, False)


@pytest.mark.parametrize("body", [b"[1, 2]", b"{nope", b'"text"'])
def test_control_body_must_be_a_json_object(sandbox: LiveSandbox, body: bytes) -> None:
    response = sandbox.http.post("/_sandbox/config", content=body)
    assert response.status_code == 400
    assert "body must be a JSON object" in response.json()["error"]


def test_users(sandbox: LiveSandbox) -> None:
    created = sandbox.http.post("/_sandbox/users", json={"name": "Ivan", "last_name": "Petrov", "admin": False})
    assert created.status_code == 201
    user = created.json()
    assert user["id"] == 101 and user["admin"] is False
    found = sandbox.call("user.get", {"filter": {"ID": 101}}).json()["result"]
    assert [(u["NAME"], u["LAST_NAME"]) for u in found] == [("Ivan", "Petrov")]
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 101, "scopes": ["user"]})
    assert sandbox.http.get(hook["url"] + "profile").json()["result"]["ADMIN"] is False
    assert sandbox.http.get(hook["url"] + "user.current").json()["result"]["ID"] == "101"


def test_webhook_of_inactive_user_is_refused(sandbox: LiveSandbox) -> None:
    user = sandbox.control("POST", "/_sandbox/users", {"name": "Gone", "active": False})
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": user["id"], "scopes": ["user"]})
    refused = sandbox.http.get(hook["url"] + "user.current")
    assert refused.status_code == 401
    assert refused.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}


def test_webhook_scopes(sandbox: LiveSandbox) -> None:
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 1, "scopes": ["user"], "name": "reader"})
    assert hook["scopes"] == ["user"] and hook["name"] == "reader"
    assert re.fullmatch(rf"http://127\.0\.0\.1:{sandbox.port}/rest/1/[0-9a-f]{{16}}/", hook["url"])
    assert sandbox.http.get(hook["url"] + "scope").json()["result"] == ["user"]
    assert sandbox.http.get(hook["url"] + "user.get").status_code == 200
    assert_insufficient_scope(sandbox.http.get(hook["url"] + "crm.contact.list"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"user_id": 99}, "no user 99"), ({"scopes": "crm"}, "scopes must be a list of strings")],
)
def test_webhook_validation(sandbox: LiveSandbox, settings: dict[str, Any], message: str) -> None:
    response = sandbox.http.post("/_sandbox/webhooks", json=settings)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_webhook_expiry(sandbox: LiveSandbox) -> None:
    now = sandbox.control("POST", "/_sandbox/clock", {"advance": 0})["now"]
    hook = sandbox.control("POST", "/_sandbox/webhooks", {"user_id": 1, "scopes": ["user"], "expires_at": now + 30})
    assert sandbox.http.get(hook["url"] + "user.current").status_code == 200
    sandbox.control("POST", "/_sandbox/clock", {"advance": 31})
    expired = sandbox.http.get(hook["url"] + "user.current")
    assert expired.status_code == 401
    assert expired.json()["error"] == "NO_AUTH_FOUND"
    assert sandbox.call("user.current").status_code == 200  # the default webhook never expires


def test_clock_moves_portal_time(sandbox: LiveSandbox) -> None:
    first = sandbox.control("POST", "/_sandbox/clock", {"advance": 3600})
    assert first["offset"] == 3600
    assert abs(first["now"] - (time.time() + 3600)) < 5
    second = sandbox.control("POST", "/_sandbox/clock", {"advance": 60})
    assert second["offset"] == 3660
    start = sandbox.call("user.current").json()["time"]["start"]
    assert abs(start - (time.time() + 3660)) < 5


def test_limits_view(sandbox: LiveSandbox) -> None:
    sandbox.reset(limits_enabled=True, burst=10, drain_per_second=0.0001)
    for _ in range(3):
        sandbox.call("user.current")
    view = sandbox.control("GET", "/_sandbox/limits")
    assert view["enabled"] is True
    bucket = view["buckets"]["127.0.0.1"]
    assert bucket["burst"] == 10
    assert 2.9 <= bucket["level"] <= 3.0
    [budget] = view["operating"]
    assert budget["method"] == "user.current"
    assert budget["used"] > 0
    assert isinstance(budget["reset_at"], int)


# --- the command line --------------------------------------------------------------------------------------


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "b24bridge"
    return [str(script)] if script.exists() else [sys.executable, "-m", "b24bridge.cli"]


def _read_banner(process: subprocess.Popen[str], until: str, timeout: float = 20) -> list[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            assert process.poll() is None, f"sandbox exited: {seen}"
            continue
        seen.append(line.rstrip())
        if until in line:
            return seen
    raise AssertionError(f"no {until!r} in output: {seen}")


def start_cli(*args: str) -> tuple[subprocess.Popen[str], int]:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    process = subprocess.Popen(
        [*_cli(), "sandbox", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, port


def wait_serving(url: str, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop_cli(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def test_cli_help() -> None:
    out = subprocess.run([*_cli(), "sandbox", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for option in ("--port", "--no-limits", "--state", "--plan"):
        assert option in out.stdout


def test_cli_serves_and_prints_credentials() -> None:
    process, port = start_cli("--no-limits")
    try:
        banner = "\n".join(_read_banner(process, "limits "))
        hook = re.search(r"incoming webhook : (\S+)", banner)
        client_id = re.search(r"client_id=(\S+)", banner)
        secret = re.search(r"client_secret=(\S+)", banner)
        assert hook and client_id and secret, banner
        assert hook.group(1).startswith(f"http://127.0.0.1:{port}/rest/1/")
        assert "limits           : off" in banner
        response = wait_serving(hook.group(1) + "user.current")
        assert response.status_code == 200
        assert response.json()["result"]["ID"] == "1"
        # limits really are off: no bucket refuses a burst well over 50
        with httpx.Client(timeout=10) as client:
            assert {client.get(hook.group(1) + "profile").status_code for _ in range(80)} == {200}
        apps = httpx.get(f"http://127.0.0.1:{port}/_sandbox/").json()["apps"]
        assert (apps[0]["client_id"], apps[0]["client_secret"]) == (client_id.group(1), secret.group(1))
    finally:
        code = stop_cli(process)
    assert code == 0


def test_cli_with_limits_enforces_the_cloud_bucket() -> None:
    process, _port = start_cli("--plan", "cloud")
    try:
        banner = "\n".join(_read_banner(process, "limits "))
        hook = re.search(r"incoming webhook : (\S+)", banner)
        assert hook
        assert "cloud: burst 50, drain 2.0/s" in banner
        wait_serving(hook.group(1) + "user.current")
        with httpx.Client(timeout=10) as client:
            statuses = [client.get(hook.group(1) + "profile").status_code for _ in range(70)]
        assert 503 in statuses
        assert 49 <= statuses.index(503) <= 60
    finally:
        stop_cli(process)
