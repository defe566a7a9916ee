"""``--state``: a sandbox started with a state file writes its world on ``POST /_sandbox/state/save`` and on
shutdown; a new sandbox started from the file is the same portal (users, webhooks, records, member_id)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.sandbox.conftest import LiveSandbox
from tests.sandbox.helpers import assert_insufficient_scope
from tests.sandbox.test_control import _cli, _read_banner, start_cli, stop_cli, wait_serving

Factory = Callable[..., LiveSandbox]


def _hook_path(url: str) -> str:
    return urlsplit(url).path


def test_save_and_load_round_trip(sandbox_factory: Factory, tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    first = sandbox_factory(limits_enabled=False, state_path=path)
    user = first.control("POST", "/_sandbox/users", {"name": "Persisted", "email": "p@example.com"})
    hook = first.control("POST", "/_sandbox/webhooks", {"user_id": user["id"], "scopes": ["user"], "name": "kept"})
    contact_id = first.call("crm.contact.add", {"fields": {"NAME": "Ann", "LAST_NAME": "Lee"}}).json()["result"]
    saved = first.control("POST", "/_sandbox/state/save")
    assert saved == {"saved": str(path)}
    data = json.loads(path.read_text())
    assert data["member_id"] == first.info["member_id"]
    assert str(user["id"]) in data["users"]
    member_id = first.info["member_id"]
    default_hook = _hook_path(first.webhook_url)
    first.stop()

    second = sandbox_factory(limits_enabled=False, state_path=path)
    assert second.port != first.port
    info = second.info
    assert info["member_id"] == member_id
    assert [u["name"] for u in info["users"]] == ["Admin", "Maria", "Persisted"]
    assert {h["name"] for h in info["webhooks"]} == {"sandbox", "kept"}
    assert _hook_path(second.webhook_url) == default_hook  # the same credentials, now on another port
    # the saved webhook authenticates on the new portal
    me = second.http.get(_hook_path(hook["url"]) + "user.current")
    assert me.status_code == 200
    assert me.json()["result"]["NAME"] == "Persisted"
    # ... with the scopes it was saved with
    assert_insufficient_scope(second.http.get(_hook_path(hook["url"]) + "crm.contact.list"))
    got = second.call("crm.contact.get", {"id": contact_id}).json()["result"]
    assert got["NAME"] == "Ann"
    # id counters survive too: the next record does not reuse an id
    assert second.call("crm.contact.add", {"fields": {"NAME": "Bob"}}).json()["result"] == contact_id + 1
    # a new user does not reuse the saved user's id
    assert second.control("POST", "/_sandbox/users", {"name": "Next"})["id"] == user["id"] + 1


def test_state_is_saved_on_shutdown(sandbox_factory: Factory, tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    first = sandbox_factory(limits_enabled=False, state_path=path)
    first.control("POST", "/_sandbox/users", {"name": "AtExit"})
    assert not path.exists()
    first.stop()
    assert path.exists()
    second = sandbox_factory(limits_enabled=False, state_path=path)
    assert "AtExit" in [u["name"] for u in second.info["users"]]


def test_save_without_state_path_is_400(sandbox: LiveSandbox) -> None:
    response = sandbox.http.post("/_sandbox/state/save")
    assert response.status_code == 400
    assert "without --state" in response.json()["error"]


def test_cli_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cli-world.json"
    process, port = start_cli("--no-limits", "--state", str(path))
    try:
        banner = "\n".join(_read_banner(process, "limits "))
        match = re.search(r"incoming webhook : (\S+)", banner)
        assert match
        hook = match.group(1)
        wait_serving(hook + "user.current")
        httpx.post(f"http://127.0.0.1:{port}/_sandbox/users", json={"name": "FromCli"}, timeout=10)
    finally:
        assert stop_cli(process) == 0
    assert "FromCli" in path.read_text()

    process, port = start_cli("--no-limits", "--state", str(path))
    try:
        banner = "\n".join(_read_banner(process, "limits "))
        match = re.search(r"incoming webhook : (\S+)", banner)
        assert match
        # same webhook code as the first run
        assert _hook_path(match.group(1)) == _hook_path(hook)
        response = wait_serving(match.group(1) + "user.get?filter[NAME]=x")
        assert response.status_code == 200
        users: list[dict[str, Any]] = httpx.get(f"http://127.0.0.1:{port}/_sandbox/", timeout=10).json()["users"]
        assert "FromCli" in [u["name"] for u in users]
    finally:
        stop_cli(process)


def test_cli_rejects_bad_options() -> None:
    out = subprocess.run(
        [*_cli(), "sandbox", "--plan", "gold"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "gold" in out.stdout + out.stderr
